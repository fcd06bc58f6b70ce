"""Header hygiene: what crosses the gateway in each direction, and what never does.

Pure module. WSGI gives request headers as ``HTTP_*`` environ keys (gunicorn joins repeated
headers with commas and, by default, drops names that contain ``_``); the response side gets
upstream headers as a list of pairs so that repeated ``Set-Cookie`` headers stay apart.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from operator import itemgetter
from typing import Any

from gw.core.bounded import KEPT
from gw.core.ids import random_hex
from gw.errors import InvalidHeader

try:  # PERF: the compiled forms of three passes below (gw/core/_fields.c)
    from gw.core._fields import answer_fields, field_values, upstream_fields
except ImportError:  # no compiler where gw was installed: the Python forms alone
    answer_fields = field_values = upstream_fields = None  # type: ignore[assignment]

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)

# APPSEC: headers whose meaning upstreams take on trust because only the gateway sets them.
# Every client-sent copy is dropped, in every spelling (`X_User_Id`, `x.user.id`), on every
# route, before the gateway adds its own.
GATEWAY_OWNED = frozenset(
    {
        "x-user-id",
        "x-user-role",
        "x-user-issuer",
        "x-request-id",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-real-ip",
        "forwarded",
        "host",
        "traceparent",  # re-issued by the gateway for its own hop (W3C trace context)
        "tracestate",
        "expect",  # never forwarded: the gateway, not the upstream, answers 100-continue
    }
)

# APPSEC: how a message is framed and where it goes is decided by gw from what it sends;
# a client's Connection header may never make a proxy drop these (RFC 9110 section 7.6.1).
_FRAMING = frozenset({"content-length", "transfer-encoding", "host"})

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{8,128}")


# PERF: header names are converted once per process, not per request (``functools.lru_cache``):
# the environ key's names, and the comparison form of a name.
# APPSEC: clients choose the names, so each cache is bounded (least recently used names go).
NAME_CACHE_SIZE = KEPT
field_name = itemgetter(0)  # a (name, value) field's name: PERF: ``map`` calls it in C
# The two fields a WSGI environ holds without HTTP_: (environ key, name, lower-case name).
CGI_HEADERS = (
    ("CONTENT_TYPE", "Content-Type", "content-type"),
    ("CONTENT_LENGTH", "Content-Length", "content-length"),
)


@lru_cache(maxsize=NAME_CACHE_SIZE)
def canonical_name(name: str) -> str:
    """Return the comparison form of a header name: lower case, ``_`` and ``.`` as ``-``."""
    return name.lower().replace("_", "-").replace(".", "-")


@lru_cache(maxsize=NAME_CACHE_SIZE)
def environ_names(key: str) -> tuple[str, str] | tuple[()]:
    """The header names of environ key ``key`` (``HTTP_X_TOKEN``: ``X-Token``), as
    ``(Name-As-Sent-Case, lower-case)``, or ``()`` for a key that is not an ``HTTP_*`` one."""
    if not key.startswith("HTTP_"):
        return ()
    name = key[5:].replace("_", "-").title()
    return (name, name.lower())


def values_of(pairs: Sequence[tuple[str, str]], form: str) -> list[str]:
    """The values of the fields in ``pairs`` whose comparison form (``canonical_name``) is
    ``form``, an ASCII name in that form: every spelling of one field, in order.

    PERF: the length first, no comparison form made for most fields: lower case and "-" for
    "_" or "." keep the length of every name whose comparison form is ASCII (the one name
    lower() lengthens, "İ", gains a non-ASCII mark). The compiled form decides a list of
    ASCII names (gw/core/_fields.c).
    """
    if field_values is not None and type(pairs) is list:
        values = field_values(pairs, form)
        if values is not None:
            return values
    size = len(form)
    return [v for n, v in pairs if len(n) == size and canonical_name(n) == form]


class Headers:
    """A request's header fields, read from the environ once: as pairs in the case the server
    gave them (for forwarding) and by lower-case name (for every lookup)."""

    __slots__ = ("_pairs", "by_name")

    def __init__(self, pairs: list[tuple[str, str]], by_name: dict[str, str] | None = None) -> None:
        """``by_name``: the same fields by lower-case name, when the caller has it."""
        self._pairs = pairs
        if by_name is None:
            by_name = {name.lower(): value for name, value in pairs}
        # Every field by lower-case name (read-only: callers must not change it). PERF: an
        # attribute, not a method: it is read four times a request.
        self.by_name: Mapping[str, str] = by_name

    @classmethod
    def from_environ(cls, environ: Mapping[str, Any]) -> Headers:
        """The client's headers from a WSGI environ: the ``HTTP_*`` keys in the environ's
        order, then Content-Type and Content-Length when they are not empty."""
        pairs: list[tuple[str, str]] = []
        by_name: dict[str, str] = {}
        for key in environ:
            names = environ_names(key)
            if names:
                value = environ[key]
                pairs.append((names[0], value))
                by_name[names[1]] = value
        return cls.from_fields(pairs, by_name, environ)

    @classmethod
    def from_fields(
        cls, pairs: list[tuple[str, str]], by_name: dict[str, str], environ: Mapping[str, Any]
    ) -> Headers:
        """The headers from ``pairs`` and ``by_name``, the ``HTTP_*`` fields of ``environ`` as
        ``from_environ`` reads them (names from ``environ_names``), then Content-Type and
        Content-Length when ``environ`` holds them, not empty."""
        for key, name, lower in CGI_HEADERS:
            value = environ.get(key)
            if value:
                pairs.append((name, value))
                by_name[lower] = value
        return cls(pairs, by_name)

    def get(self, name: str) -> str | None:
        """The field's value (repeated fields arrive joined by the server), or None."""
        return self.by_name.get(name.lower())

    def __contains__(self, name: str) -> bool:
        return name.lower() in self.by_name

    def items(self) -> list[tuple[str, str]]:
        """Every field as ``(name, value)``, in the server's order."""
        return self._pairs


def chunked_only(coding: str) -> bool:
    """Whether a ``Transfer-Encoding`` value is exactly one ``chunked`` and no other coding.

    APPSEC: a coding gw does not apply (``gzip, chunked``, ``identity``) would pass bytes on
    as content that the sender did not mean as content; both directions refuse it.
    """
    return [c.strip(" \t").lower() for c in coding.split(",")] == ["chunked"]


@lru_cache(maxsize=8)
def _refused_in_connection(owned: frozenset[str]) -> frozenset[str]:
    return _FRAMING | owned


@lru_cache(maxsize=8)
def _never_forwarded(owned: frozenset[str]) -> frozenset[str]:
    # PERF: the sets depend on the config only; built once per config, not per request.
    return HOP_BY_HOP | _FRAMING | owned


def check_connection(value: str | None, owned: frozenset[str] = GATEWAY_OWNED) -> None:
    """Refuse a ``Connection`` header that names a framing or gateway-owned header.

    Raises:
        InvalidHeader: it names Content-Length, Transfer-Encoding, Host or an owned header.
    """
    if not value:
        return
    named = {canonical_name(token.strip()) for token in value.split(",")}
    # APPSEC: "Connection: Content-Length" once made gw drop the length but stream the body,
    # so the upstream read the body as a second request (smuggling). Refused, as nothing
    # legitimate asks a proxy to drop these.
    refused = sorted(named & _refused_in_connection(owned))
    if refused:
        raise InvalidHeader(f"the Connection header must not name {', '.join(refused)}")


def forwardable(headers: Headers, owned: frozenset[str] = GATEWAY_OWNED) -> list[tuple[str, str]]:
    """Drop hop-by-hop and framing headers, those the client's ``Connection`` names, and
    gateway-owned ones (the caller has refused a Connection that names framing or owned ones,
    see ``check_connection``; gw sets the framing of what it sends itself).

    ``owned`` holds canonical names (see ``canonical_name``) of every header the gateway sets
    itself, the identity headers of the auth configuration included.
    """
    dropped = _never_forwarded(owned)
    pairs = headers.items()
    # PERF: every pair's lower-case name is a key of by_name, so without "connection" there
    # no pair is a Connection field, and none needs a lower-case copy to find one.
    if "connection" in headers.by_name:
        for name, value in pairs:
            if name.lower() == "connection":
                # APPSEC: a client may name any header in Connection to make a proxy drop it
                # (the "hop-by-hop abuse" class); names of headers we add ourselves lose
                # nothing, because we add ours after filtering.
                named = {canonical_name(token.strip()) for token in value.split(",")}
                dropped = dropped | named
    return [(n, v) for n, v in pairs if canonical_name(n) not in dropped]


def forwardable_by_name(headers: Headers, owned: frozenset[str] = GATEWAY_OWNED) -> dict[str, str]:
    """``dict(forwardable(headers, owned))``: the forwardable fields by name as sent (a
    repeated name keeps its first place and its last value).

    PERF: without a Connection field (no pair is one: see ``forwardable``), its compiled form
    makes the dict in one pass; it leaves a name that is not ASCII to ``forwardable``.
    """
    if upstream_fields is not None and "connection" not in headers.by_name:
        fields = upstream_fields(headers.items(), _never_forwarded(owned))
        if fields is not None:
            return fields
    return dict(forwardable(headers, owned))


def response_headers(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Return the upstream's response headers minus hop-by-hop ones (``Set-Cookie`` kept apart).

    APPSEC: ``pairs`` are an upstream answer's, whose names ``gw.upstream.wire`` gives in lower
    case (PERF: compared as they are, with no lower-case copy each); a name in another case
    would not be dropped. PERF: its compiled form filters a list without a Connection field.
    """
    if answer_fields is not None and type(pairs) is list:
        kept = answer_fields(pairs, HOP_BY_HOP)
        if kept is not None:
            return kept
    pairs = list(pairs)
    dropped = HOP_BY_HOP
    for name, value in pairs:
        if name == "connection":
            dropped = dropped | {token.strip().lower() for token in value.split(",")}
    return [(n, v) for n, v in pairs if n not in dropped]


def request_id(incoming: str | None) -> str:
    """Honour a well-formed incoming request id, or mint a new one."""
    if incoming and _REQUEST_ID.fullmatch(incoming):
        return incoming
    return "req_" + random_hex(10)
