"""Aggregate routes: one client request fans out to several upstreams and returns one document.

Build once: ``compile_aggregate`` turns an ``aggregate:`` block into an ``AggregateSpec`` whose
path templates are parsed into literal and field pieces. Serve many: ``Aggregator.run`` fills
the templates from the request, sends every part in parallel on a per-process thread pool and
merges the JSON answers.

The merged document, always status 200 and ``application/json``::

    {"user": {...}, "recent_orders": [...], "recommendations": null,
     "_missing": ["recommendations"]}

- Every part's JSON lands under its ``key``, in configuration order, whatever the order the
  answers arrived in. Nothing is merged into anything else, so two parts can never overwrite
  each other's fields.
- A failed optional part (``required: false``) becomes ``null``; its key is listed in the
  top-level ``"_missing"`` array and in the ``X-Gateway-Missing-Parts`` response header (both
  absent when nothing is missing).
- A failed required part (the default) fails the route: ``504 upstream_timeout`` when it timed
  out, else ``502`` with ``upstream_unavailable``, ``upstream_bad_response`` (not JSON, too large,
  broken off) or ``part_failed`` (a non-2xx status); the message and the error's ``"part"`` field
  name the part. The other parts are abandoned: their connections are closed, never returned to
  a pool half-read.
- Parts are GET requests carrying the headers the pipeline built (identity headers included),
  with ``Accept: application/json`` and ``Accept-Encoding: identity``; the client's conditional,
  range and body headers are not sent (a 304 or a 206 is not a document). Part response headers
  are not passed on.

Templates (``/orders?user={identity.sub}&limit={query.limit:-3}``): fields are
``{params.NAME}`` (route path parameters), ``{query.NAME}`` (first value of a client query
parameter), ``{identity.sub}``, ``{identity.role}`` and ``{identity.claims.NAME}``. ``:-`` gives
a default used when the value is absent or empty (as in the shell); without a default, an absent
or empty value is ``400 missing_parameter`` before any upstream is called. Values are
percent-encoded for their place, so a value can never add a path segment, a ``?`` or a ``&``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl, quote

from gw.core.exchange import Outcome
from gw.core.paths import canonicalize, encode_path
from gw.core.routing import SegmentKind, parse_pattern
from gw.errors import (
    ClientError,
    ConfigError,
    GatewayError,
    InvalidPath,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamTimeout,
)
from gw.shaping import dump_json, load_json
from gw.upstream.client import UpstreamRequest

if TYPE_CHECKING:
    from gw.shaping.settings import AggregateSettings
    from gw.upstream.client import UpstreamClient, UpstreamResponse

log = logging.getLogger("gw")

MISSING_PARTS_HEADER = "X-Gateway-Missing-Parts"
MISSING_FIELD = "_missing"
KNOWN_FIELDS = "params.NAME, query.NAME, identity.sub, identity.role, identity.claims.NAME"

_BRACES = re.compile(r"\{([^{}]*)\}")
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_QUERY_TEXT = re.compile(r"[\x21-\x7e]*")  # printable ASCII without space
_QUERY_SAFE = "-._~"
# Request headers a part never sends: a part is a body-less GET for a whole JSON document.
_PART_DROPPED = frozenset(
    {
        "accept",
        "accept-encoding",
        "content-length",
        "content-type",
        "transfer-encoding",
        "expect",
        "range",
        "if-range",
        "if-match",
        "if-none-match",
        "if-modified-since",
        "if-unmodified-since",
        "host",
    }
)


class MissingParameter(ClientError):
    """A template needs a value the request does not have (400)."""

    code = "missing_parameter"


class InvalidParameter(ClientError):
    """A value cannot be placed in a part's path safely (400)."""

    code = "invalid_parameter"


class PartFailed(UpstreamError):
    """A part's upstream answered with a status other than 2xx (502)."""

    code = "part_failed"


class Identity(Protocol):
    """The verified caller, as the authentication stage describes it."""

    @property
    def subject(self) -> str: ...

    @property
    def role(self) -> str | None: ...

    @property
    def claims(self) -> Mapping[str, Any]: ...


# -- templates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One ``{...}`` piece of a template."""

    text: str  # as written, braces included
    source: str  # "params", "query", "sub", "role" or "claim"
    name: str  # parameter, query or claim name ('' for sub and role)
    default: str | None
    in_query: bool


@dataclass(frozen=True)
class Template:
    """A part's path template, parsed into literal text and fields."""

    text: str
    pieces: tuple[str | Field, ...]

    @property
    def fields(self) -> tuple[Field, ...]:
        """Return the fields in the order written."""
        return tuple(piece for piece in self.pieces if isinstance(piece, Field))

    def render(self, values: RequestValues) -> str:
        """Return the origin-form path with every field filled in and encoded.

        Raises:
            MissingParameter: a field has no value and no default.
            InvalidParameter: a value cannot be placed in a path segment unambiguously.
        """
        return "".join(
            piece if isinstance(piece, str) else _encode(piece, values.lookup(piece))
            for piece in self.pieces
        )


def parse_template(text: str) -> Template:
    """Parse a part path template.

    Raises:
        ValueError: with a readable message (unknown field, bad literal text, bad default).
    """
    if not text.startswith("/") or text.startswith("//"):
        raise ValueError(f"path {text!r} must start with a single '/'")
    path, question, query = text.partition("?")
    pieces = _parse_place(path, in_query=False)
    if question:
        pieces += ["?", *_parse_place(query, in_query=True)]
    return Template(text, tuple(pieces))


def _parse_place(text: str, in_query: bool) -> list[str | Field]:
    """Split the path or the query part of a template into literals and fields."""
    pieces: list[str | Field] = []
    at = 0
    for found in _BRACES.finditer(text):
        pieces.append(text[at : found.start()])
        pieces.append(_parse_field(found.group(0), found.group(1), in_query))
        at = found.end()
    pieces.append(text[at:])
    _check_literals(pieces, in_query)
    return [piece for piece in pieces if piece != ""]


def _parse_field(text: str, inner: str, in_query: bool) -> Field:
    """Parse the inside of one ``{...}``."""
    name, colon, default = inner.partition(":-")
    source, _, rest = name.partition(".")
    field = _field_kind(source, rest)
    if field is None:
        raise ValueError(f"unknown field {text!r} (known: {KNOWN_FIELDS})")
    kind, key = field
    result = Field(text, kind, key, default if colon else None, in_query)
    if result.default and not in_query:
        _check_path_value(result.default, result)
    return result


def _field_kind(source: str, rest: str) -> tuple[str, str] | None:
    """Return (source, name) for a valid field name, or None."""
    if source == "params" and _PARAM_NAME.fullmatch(rest):
        return "params", rest
    if source == "query" and rest and _QUERY_TEXT.fullmatch(rest):
        return "query", rest
    if source == "identity" and rest in ("sub", "role"):
        return rest, ""
    if source == "identity" and rest.startswith("claims.") and len(rest) > len("claims."):
        return "claim", rest[len("claims.") :]
    return None


def _check_literals(pieces: list[str | Field], in_query: bool) -> None:
    """Refuse literal text that is not a legal request target."""
    literals = [piece for piece in pieces if isinstance(piece, str)]
    for literal in literals:
        if "{" in literal or "}" in literal:
            raise ValueError(f"unbalanced brace in {literal!r}; fields are written {{source.name}}")
        if in_query and not (_QUERY_TEXT.fullmatch(literal) and "#" not in literal):
            raise ValueError(f"query text {literal!r} must be printable ASCII without '#'")
    if not in_query:
        # Each field stands in for one plain character: the literal frame must be canonical.
        frame = "".join(piece if isinstance(piece, str) else "x" for piece in pieces)
        try:
            canonical = canonicalize(frame)
        except InvalidPath as ex:
            raise ValueError(f"path: {ex.message}") from None
        if encode_path(canonical) != frame:
            raise ValueError(
                f"path is not in canonical form; write it as {encode_path(canonical)!r}"
            )


# -- request values ---------------------------------------------------------------------------


class RequestValues:
    """What templates can draw on, for one request."""

    def __init__(self, params: Mapping[str, str], query: str, identity: Identity | None) -> None:
        self.params = params
        self.raw_query = query
        self.identity = identity
        self._query: dict[str, str] | None = None

    def lookup(self, field: Field) -> str:
        """Return the field's value, or its default when absent or empty.

        Raises:
            MissingParameter: absent or empty, and no default.
        """
        value = self._raw(field)
        if value:
            return value
        if field.default is not None:
            return field.default
        raise MissingParameter(_missing_message(field), extra={"parameter": field.text[1:-1]})

    def _raw(self, field: Field) -> str | None:
        if field.source == "params":
            return self.params.get(field.name)
        if field.source == "query":
            return self._parsed_query().get(field.name)
        if self.identity is None:
            return None
        if field.source == "sub":
            return self.identity.subject
        if field.source == "role":
            return self.identity.role
        return _claim_text(field.name, self.identity.claims.get(field.name))

    def _parsed_query(self) -> dict[str, str]:
        if self._query is None:
            try:
                pairs = parse_qsl(self.raw_query, keep_blank_values=True, errors="strict")
            except UnicodeDecodeError:
                raise InvalidParameter("the query string is not valid UTF-8") from None
            self._query = {}
            for name, value in pairs:
                self._query.setdefault(name, value)  # the first value wins
        return self._query


def _claim_text(name: str, value: Any) -> str | None:
    """Return a claim as text; only single values can go into a path."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    raise InvalidParameter(f"claim {name!r} is not a single value and cannot go into a path")


def _missing_message(field: Field) -> str:
    if field.source == "query":
        return f"this request needs the query parameter {field.name!r}"
    if field.source == "params":
        return f"this request needs the path parameter {field.name!r}"
    what = {"sub": "a subject", "role": "a role", "claim": f"the claim {field.name!r}"}
    return f"this request needs a verified identity with {what[field.source]}"


def _encode(field: Field, value: str) -> str:
    """Percent-encode a value for its place in the request target."""
    try:
        if field.in_query:
            # APPSEC: only unreserved characters stay as they are, so '&', '=', '#', '+' and
            # '%' in a value can never start another parameter or change how it decodes.
            return quote(value, safe=_QUERY_SAFE)
        return _check_path_value(value, field)
    except UnicodeEncodeError:  # a claim may hold a lone surrogate
        raise InvalidParameter(f"the value of {field.text} is not valid Unicode text") from None


def _check_path_value(value: str, field: Field) -> str:
    """Encode a value for a path segment, refusing what readers could split or climb with."""
    encoded = quote(value, safe=_QUERY_SAFE)
    # APPSEC: percent-encoding alone is not enough for a path: upstreams that decode before
    # splitting read %2F as '/', and '.'/'..' climb. The gateway's own canonicalizer decides:
    # the value must decode to exactly one plain segment.
    try:
        ok = canonicalize("/" + encoded) == "/" + value
    except InvalidPath:
        ok = False
    if not ok:
        raise InvalidParameter(
            f"the value of {field.text} cannot be used as a path segment "
            "(it contains '/', '\\', '?', '#', ';', a control character or is '.' or '..')"
        )
    return encoded


# -- compiled configuration -------------------------------------------------------------------


@dataclass(frozen=True)
class PartSpec:
    key: str
    upstream: str
    template: Template
    required: bool
    timeout: float | None


@dataclass(frozen=True)
class AggregateSpec:
    """A compiled ``aggregate:`` block."""

    parts: tuple[PartSpec, ...]
    timeout: float
    max_part_bytes: int

    @property
    def uses_identity(self) -> bool:
        """Return whether any template reads the verified identity."""
        return any(
            f.source in ("sub", "role", "claim") for p in self.parts for f in p.template.fields
        )


def compile_aggregate(
    settings: AggregateSettings,
    upstreams: Collection[str],
    route_path: str | None = None,
    where: str = "aggregate",
) -> AggregateSpec:
    """Compile a validated ``aggregate:`` block; check upstream and parameter names.

    Args:
        upstreams: the configured upstream names.
        route_path: the route's pattern; when given, ``{params.NAME}`` must name one of its
            parameters.
        where: the block's location for error messages (``routes[3].aggregate``).

    Raises:
        ConfigError: listing every problem with its location.
    """
    problems: list[str] = []
    names = _route_params(route_path)
    parts = []
    for i, part in enumerate(settings.parts):
        at = f"{where}.parts[{i}]"
        if part.upstream not in upstreams:
            known = ", ".join(sorted(upstreams)) or "none defined"
            problems.append(f"{at}.upstream: no upstream named {part.upstream!r} (known: {known})")
        template = parse_template(part.path)  # already validated by the settings model
        problems += [
            f"{at}.path: {f.text}: the route path has no parameter {f.name!r}"
            for f in template.fields
            if f.source == "params" and names is not None and f.name not in names
        ]
        parts.append(PartSpec(part.key, part.upstream, template, part.required, part.timeout))
    if problems:
        raise ConfigError(problems)
    return AggregateSpec(tuple(parts), settings.timeout, settings.max_part_bytes)


def _route_params(route_path: str | None) -> set[str] | None:
    if route_path is None:
        return None
    segments = parse_pattern(route_path).segments
    return {seg.value for seg in segments if seg.kind is not SegmentKind.LITERAL and seg.value}


# -- running ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Result:
    value: Any = None
    error: GatewayError | None = None


@dataclass(frozen=True, slots=True)
class PartReport:
    """What one part sent upstream did, for the metrics and the access log.

    ``status`` is None when no response arrived (``error`` then says why, as the gateway error
    code); ``seconds`` runs until the response headers, or until the failure.
    """

    key: str
    upstream: str
    target: str | None
    status: int | None
    seconds: float
    error: str | None

    def log_fields(self) -> dict[str, Any]:
        """Return the part's entry for the access line's ``parts`` list."""
        fields: dict[str, Any] = {"key": self.key, "upstream": self.upstream}
        fields.update(target=self.target, status=self.status)
        fields["duration_ms"] = round(self.seconds * 1000, 3)
        return fields | ({"error": self.error} if self.error else {})


PartObserver = Callable[[PartReport], None]


class _Call:
    """One part's request, run on a pool thread; the request thread may cancel it."""

    def __init__(
        self,
        part: PartSpec,
        path: str,
        headers: dict[str, str],
        client: UpstreamClient,
        deadline: float,
        max_bytes: int,
        observe: PartObserver | None = None,
    ) -> None:
        self.part = part
        self.path = path
        self.headers = headers
        self.client = client
        self.deadline = deadline
        self.max_bytes = max_bytes
        self.observe = observe
        # PERF: a plain attribute is enough: it only ever goes from False to True.
        self.cancelled = False

    def fetch(self) -> _Result:
        """Send the part and read its JSON answer; never raise an UpstreamError."""
        remaining = self.deadline - time.monotonic()
        if self.cancelled or remaining <= 0:
            return _Result(error=self.timed_out())  # never sent: no upstream saw it
        started = time.monotonic()
        try:
            request = UpstreamRequest("GET", self.path, self.headers, read_timeout=remaining)
            response = self.client.send(request)
        except UpstreamError as ex:
            self._report(None, time.monotonic() - started, ex)
            return _Result(error=ex)
        seconds = time.monotonic() - started
        try:
            result = _Result(value=self._read(response))
        except UpstreamError as ex:
            result = _Result(error=ex)
        finally:
            if not response.finished:
                response.abandon()  # cancelled, failed or too large: never reuse half-read
        self._report(response, seconds, result.error)
        return result

    def _report(
        self, response: UpstreamResponse | None, seconds: float, error: GatewayError | None
    ) -> None:
        if self.observe is None:
            return
        target = str(response.target) if response is not None else None
        status = response.status if response is not None else None
        code = error.code if error is not None else None
        self.observe(PartReport(self.part.key, self.part.upstream, target, status, seconds, code))

    def _read(self, response: UpstreamResponse) -> Any:
        name = self.part.upstream
        if not 200 <= response.status < 300:
            raise PartFailed(
                f"upstream {name} answered with status {response.status}",
                extra={"upstream_status": response.status},
            )
        declared = _content_length(response.headers)
        if declared is not None and declared > self.max_bytes:
            raise self._too_large()
        data = self._collect(response)
        try:
            return load_json(data)
        except ValueError:
            raise UpstreamBadResponse(
                f"upstream {name} answered with a body that is not JSON"
            ) from None

    def _collect(self, response: UpstreamResponse) -> bytes:
        data = bytearray()
        # Leaving this loop early leaves the response unfinished: fetch() then abandons it.
        for chunk in response.body():
            data += chunk
            if len(data) > self.max_bytes:
                raise self._too_large()
            if self.cancelled or time.monotonic() > self.deadline:
                raise self.timed_out()
        return bytes(data)

    def _too_large(self) -> UpstreamBadResponse:
        return UpstreamBadResponse(
            f"upstream {self.part.upstream} answered with more than {self.max_bytes} bytes"
        )

    def timed_out(self) -> UpstreamTimeout:
        return UpstreamTimeout(f"upstream {self.part.upstream} did not answer in time")

    def cancel(self) -> None:
        self.cancelled = True


class Aggregator:
    """Run aggregate routes on a bounded thread pool made lazily in each worker process."""

    def __init__(self, threads: int = 16) -> None:
        self.threads = threads
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pid = -1

    def run(
        self,
        spec: AggregateSpec,
        params: Mapping[str, str],
        query: str,
        identity: Identity | None,
        headers: Mapping[str, str],
        clients: Mapping[str, UpstreamClient],
        observe: PartObserver | None = None,
    ) -> Outcome:
        """Call every part in parallel and return the merged document (status 200).

        Args:
            params: the route match's path parameters.
            query: the raw query string, without the '?'.
            identity: the verified caller, or None.
            headers: the upstream request headers the pipeline built.
            clients: upstream name -> client.
            observe: told about every part that was sent, from the thread that ran it.

        Raises:
            MissingParameter, InvalidParameter: before any upstream is called.
            UpstreamError: a required part failed (504 timeout, else 502); names the part.
        """
        started = time.monotonic()
        values = RequestValues(params, query, identity)
        paths = [part.template.render(values) for part in spec.parts]  # 400s come first
        calls = [
            self._call(spec, part, path, headers, clients[part.upstream], started, observe)
            for part, path in zip(spec.parts, paths, strict=True)
        ]
        return _merge(spec, self._gather(calls))

    def close(self) -> None:
        """Stop the pool (parts already running finish on their own timeouts)."""
        with self._lock:
            if self._pool is not None and self._pid == os.getpid():
                self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool, self._pid = None, -1

    @staticmethod
    def _call(
        spec: AggregateSpec,
        part: PartSpec,
        path: str,
        headers: Mapping[str, str],
        client: UpstreamClient,
        started: float,
        observe: PartObserver | None,
    ) -> _Call:
        deadline = started + min(part.timeout or spec.timeout, spec.timeout)
        target_path = _under_base(client.spec.targets[0].base_path, path)
        sent = _part_headers(headers, client)
        return _Call(part, target_path, sent, client, deadline, spec.max_part_bytes, observe)

    def _gather(self, calls: list[_Call]) -> list[_Result]:
        """Wait for every part; stop at the first failed required part or past a deadline."""
        pool = self._executor()
        futures = {pool.submit(call.fetch): call for call in calls}
        results: dict[_Call, _Result] = {}
        try:
            pending: set[Future[_Result]] = set(futures)
            while pending:
                timeout = min(futures[f].deadline for f in pending) - time.monotonic()
                done, pending = wait(pending, timeout=max(timeout, 0), return_when=FIRST_COMPLETED)
                for future in done:
                    _record(futures[future], future.result(), results)
                now = time.monotonic()
                for future in [f for f in pending if futures[f].deadline <= now]:
                    pending.discard(future)
                    _record(futures[future], _settled(future, futures[future]), results)
        finally:
            for future, call in futures.items():
                future.cancel()
                call.cancel()
        return [results[call] for call in calls]

    def _executor(self) -> ThreadPoolExecutor:
        pid = os.getpid()
        if self._pid != pid:  # PERF: no lock once the pool exists in this process
            with self._lock:
                if self._pid != pid:
                    self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="gw-part")
                    self._pid = pid
        assert self._pool is not None
        return self._pool


def _settled(future: Future[_Result], call: _Call) -> _Result:
    """Return the result of a part past its deadline: a timeout unless it just finished."""
    return future.result() if future.done() else _Result(error=call.timed_out())


def _record(call: _Call, result: _Result, results: dict[_Call, _Result]) -> None:
    """Keep a part's result; raise at once when a required part failed."""
    results[call] = result
    if result.error is None:
        return
    message = f"aggregate part {call.part.key!r}: {result.error.message}"
    if call.part.required:
        extra = {**result.error.extra, "part": call.part.key}
        raise type(result.error)(message, extra=extra)
    log.warning("%s (optional: answered with null)", message)


def _merge(spec: AggregateSpec, results: list[_Result]) -> Outcome:
    """Build the document: keys in configuration order, failed optional parts as null."""
    document: dict[str, Any] = {}
    missing = []
    for part, result in zip(spec.parts, results, strict=True):
        document[part.key] = result.value
        if result.error is not None:
            missing.append(part.key)
    if missing:
        document[MISSING_FIELD] = missing
    body = dump_json(document)
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    if missing:
        headers.append((MISSING_PARTS_HEADER, ", ".join(missing)))
    return Outcome(200, headers, [body])


def _part_headers(headers: Mapping[str, str], client: UpstreamClient) -> dict[str, str]:
    """Return the pipeline's headers for a body-less GET that must answer with whole JSON."""
    sent = {name: value for name, value in headers.items() if name.lower() not in _PART_DROPPED}
    client_host = next((v for n, v in headers.items() if n.lower() == "x-forwarded-host"), "")
    if client.spec.preserve_host and client_host:
        sent["Host"] = client_host
    # Otherwise the picked target's own host:port (gw.upstream.wire.request_head).
    sent["Accept"] = "application/json"
    sent["Accept-Encoding"] = "identity"
    return sent


def _under_base(base: str, path: str) -> str:
    """Put an origin-form path under the upstream's base path (``/`` alone is the base)."""
    if not base:
        return path
    if path == "/" or path.startswith("/?"):
        return base + path[1:]
    return base + path


def _content_length(headers: list[tuple[str, str]]) -> int | None:
    for name, value in headers:
        if name.lower() == "content-length" and value.strip().isdigit():
            return int(value)
    return None
