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

Templates (``{params.NAME}``, ``{query.NAME}``, ``{identity.sub}``, ...): see
``gw.shaping.templates``; one part's request and answer: ``gw.shaping.parts``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Collection, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gw.core.exchange import Outcome
from gw.core.identity import Identity
from gw.core.patterns import SegmentKind, parse_pattern
from gw.errors import ConfigError
from gw.shaping import dump_json
from gw.shaping.parts import PartCall, PartObserver, PartResult
from gw.shaping.templates import MISSING_FIELD, RequestValues, Template, parse_template

if TYPE_CHECKING:
    from gw.shaping.settings import AggregateSettings
    from gw.upstream.client import UpstreamClient

log = logging.getLogger("gw")

MISSING_PARTS_HEADER = "X-Gateway-Missing-Parts"
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
    ) -> PartCall:
        deadline = started + min(part.timeout or spec.timeout, spec.timeout)
        target_path = _under_base(client.spec.targets[0].base_path, path)
        sent = _part_headers(headers, client)
        return PartCall(part, target_path, sent, client, deadline, spec.max_part_bytes, observe)

    def _gather(self, calls: list[PartCall]) -> list[PartResult]:
        """Wait for every part; stop at the first failed required part or past a deadline."""
        pool = self._executor()
        futures = {pool.submit(call.fetch): call for call in calls}
        results: dict[PartCall, PartResult] = {}
        try:
            pending: set[Future[PartResult]] = set(futures)
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


def _settled(future: Future[PartResult], call: PartCall) -> PartResult:
    """Return the result of a part past its deadline: a timeout unless it just finished."""
    return future.result() if future.done() else PartResult(error=call.timed_out())


def _record(call: PartCall, result: PartResult, results: dict[PartCall, PartResult]) -> None:
    """Keep a part's result; raise at once when a required part failed."""
    results[call] = result
    if result.error is None:
        return
    message = f"aggregate part {call.part.key!r}: {result.error.message}"
    if call.part.required:
        extra = {**result.error.extra, "part": call.part.key}
        raise type(result.error)(message, extra=extra)
    log.warning("%s (optional: answered with null)", message)


def _merge(spec: AggregateSpec, results: list[PartResult]) -> Outcome:
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
