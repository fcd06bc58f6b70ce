"""What the upstream must receive for a request gw forwards: the contract the corpus gates check.

Pure module (no sockets). It states, independently of gw's code, which client headers cross
the gateway (README "Header hygiene"), and computes the upstream target with gw's documented
path rules (``gw.core.paths``: decode once, canonicalize once, re-encode).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from gw.core.paths import canonicalize, encode_path, split_target
from gw.errors import InvalidPath
from tests.support.corpus import ExpectedRequest
from tests.support.recorder import Recorded

# Hop-by-hop fields (RFC 9110 section 7.6.1) and the ones gw owns: never forwarded as sent.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding"}
    | {"upgrade", "proxy-authenticate", "proxy-authorization"}
)
GATEWAY_OWNED = frozenset(
    {"host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port"}
    | {"x-forwarded-prefix", "x-real-ip", "forwarded", "x-request-id", "traceparent"}
    | {"tracestate", "expect", "x-user-id", "x-user-role"}
)
# The framing is gw's own: Content-Length / Transfer-Encoding are derived from the bytes sent.
FRAMING = frozenset({"content-length", "transfer-encoding"})
# Headers gw adds to every forwarded request (Accept-Encoding only when the client sent none).
ADDED = GATEWAY_OWNED | FRAMING | {"accept-encoding"}


@dataclass(frozen=True)
class Forwarded:
    """What the upstream should receive for one client request."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]  # lower-case names, gunicorn's values
    body: bytes
    effective_host: str | None


def upstream_target(raw_uri: str) -> str:
    """The target gw sends upstream for ``raw_uri`` (origin-form, canonical, re-encoded).

    Raises:
        InvalidPath: gw's path rules refuse the target.
    """
    raw_path, query = split_target(raw_uri)
    path = encode_path(canonicalize(raw_path))
    return f"{path}?{query}" if query else path


def effective_host(request: ExpectedRequest) -> str | None:
    """The authority of an absolute-form target, else the Host header (RFC 9112 section 3.2)."""
    if not request.raw_uri.startswith("/") and "://" in request.raw_uri:
        return urlsplit(request.raw_uri).netloc or None
    hosts = [v for n, v in request.headers if n.lower() == "host"]
    return hosts[0] if hosts else None


def forwarded(request: ExpectedRequest) -> Forwarded:
    """The request gw must send upstream for ``request``.

    Raises:
        InvalidPath: gw's path rules refuse the target.
    """
    named = {
        token.strip().lower()
        for name, value in request.headers
        if name.lower() == "connection"
        for token in value.split(",")
    }
    dropped = HOP_BY_HOP | GATEWAY_OWNED | FRAMING | named
    headers = tuple(
        (name.lower(), value)
        for name, value in request.headers
        if name.lower() not in dropped and "_" not in name
    )
    target = upstream_target(request.raw_uri)
    return Forwarded(request.method, target, headers, request.body, effective_host(request))


def _elements(values: list[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",")]


def mismatches(expected: Forwarded, got: Recorded, trailer_names: set[str]) -> list[str]:
    """Every way ``got`` differs from ``expected``; empty when the upstream got the request."""
    problems = []
    if got.method != expected.method:
        problems.append(f"method {got.method!r}, expected {expected.method!r}")
    if got.target != expected.target:
        problems.append(f"target {got.target!r}, expected {expected.target!r}")
    if got.body != expected.body:
        problems.append(
            f"body {got.body[:80]!r} ({len(got.body)} bytes), expected {len(expected.body)}"
        )
    names = {n for n, _ in expected.headers}
    for name in sorted(names):
        want = _elements([v for n, v in expected.headers if n == name])
        have = _elements(got.values(name))
        if want != have:
            problems.append(f"header {name}: {have!r}, expected {want!r}")
    extra = {n for n, _ in got.headers} - names - ADDED
    if extra:
        problems.append(f"headers the client did not send: {sorted(extra)}")
    smuggled = trailer_names & {n for n, _ in got.headers} - ADDED
    if smuggled:
        problems.append(f"trailer fields forwarded as headers: {sorted(smuggled)}")
    xfh = got.header("x-forwarded-host")
    if xfh != expected.effective_host:
        problems.append(f"X-Forwarded-Host {xfh!r}, expected {expected.effective_host!r}")
    return problems


def target_refused(raw_uri: str) -> str | None:
    """gw's path rules' reason to refuse ``raw_uri``, or None when they accept it."""
    try:
        upstream_target(raw_uri)
    except InvalidPath as ex:
        return str(ex)
    return None
