"""What may be served from the cache and what may be stored, for how long.

Pure module. A shared cache's reading of RFC 9111, narrowed to what a gateway can do safely:

Request side (``request_bypass``): only GET and HEAD use the cache. A request with
``Cache-Control: no-cache`` / ``no-store`` or ``Pragma: no-cache`` goes to the upstream and is
not stored (unless the route turns ``honor_client_no_cache`` off). A request that carries
``Authorization`` on a route whose key does not include the identity bypasses the cache: the
upstream may answer it per caller, and the gateway cannot tell.

Response side (``response_ttl``): stored only for a listed status, never with ``Set-Cookie``,
never ``no-store``, ``no-cache`` or ``Vary: *``, never when ``Vary`` names a request header the
key does not include. ``private`` is stored only when the key includes the identity: each
caller then has a private cache of their own inside the gateway. The entry lives for the
route's ``ttl``, shortened by ``s-maxage`` (or else ``max-age``) minus the upstream's ``Age``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

SAFE_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True, slots=True)
class Storage:
    """Whether to store a response: ``ttl`` seconds (0: do not), and why not (for logs)."""

    ttl: float
    reason: str = ""
    age: int = 0  # the upstream's Age, added to the age of every hit


def request_bypass(
    method: str,
    headers: Mapping[str, str],
    identity_keyed: bool,
    honor_client_no_cache: bool = True,
) -> str | None:
    """Return why this request must not use the cache, or None when it may.

    ``headers`` are the request's headers by lower-case name; ``identity_keyed`` tells whether
    the key includes the caller (the route authenticates).
    """
    if method.upper() not in SAFE_METHODS:
        return "method"
    if honor_client_no_cache and _client_refuses(headers):
        return "client no-cache"
    # APPSEC: a credential the gateway did not verify for this route may still make the
    # upstream answer per caller; without the identity in the key, never share that answer.
    if "authorization" in headers and not identity_keyed:
        return "authorization"
    return None


def response_ttl(
    status: int,
    headers: Iterable[tuple[str, str]],
    route_ttl: float,
    statuses: Sequence[int],
    vary: Sequence[str],
    identity_keyed: bool,
) -> Storage:
    """Decide whether (and how long) to store an upstream response.

    Args:
        status: the upstream status.
        headers: the upstream response headers.
        route_ttl: the route's ``ttl``, the longest life of an entry.
        statuses: the route's storable statuses.
        vary: lower-case names of the request headers in the key.
        identity_keyed: the key includes the caller's identity.
    """
    if status not in statuses:
        return Storage(0, "status")
    pairs = [(name.lower(), value) for name, value in headers]
    if any(name == "set-cookie" for name, _ in pairs):
        return Storage(0, "set-cookie")  # APPSEC: a cookie is one client's, never shared
    refusal = _vary_refusal(pairs, vary)
    if refusal:
        return Storage(0, refusal)
    directives = parse_cache_control(value for name, value in pairs if name == "cache-control")
    return _lifetime(directives, route_ttl, _age(pairs), identity_keyed)


def parse_cache_control(values: Iterable[str]) -> dict[str, str | None]:
    """Parse Cache-Control values into lower-case directives (``{"max-age": "60"}``)."""
    directives: dict[str, str | None] = {}
    for value in values:
        for part in _split_outside_quotes(value):
            name, sep, arg = part.strip().partition("=")
            name = name.strip().lower()
            if name and name not in directives:  # RFC 9111: the first occurrence wins
                directives[name] = arg.strip().strip('"') if sep else None
    return directives


def _lifetime(
    directives: Mapping[str, str | None], route_ttl: float, age: int, identity_keyed: bool
) -> Storage:
    """Turn response directives into a TTL: refusals first, then the shortest lifetime."""
    for refused in ("no-store", "no-cache"):
        if refused in directives:
            return Storage(0, refused)
    # APPSEC: "private" means "not for a shared cache". Keyed by identity, each caller's entry
    # is only ever served to that caller again, which is what a private cache is.
    if "private" in directives and not identity_keyed:
        return Storage(0, "private")
    ttl = route_ttl
    limit = directives.get("s-maxage", directives.get("max-age"))
    if "s-maxage" in directives or "max-age" in directives:
        seconds = _seconds(limit)
        if seconds is None:
            return Storage(0, "invalid max-age")  # RFC 9111 4.2.1: treat as stale
        ttl = min(ttl, seconds - age)
    if ttl <= 0:
        return Storage(0, "stale")
    return Storage(ttl, "", age)


def _client_refuses(headers: Mapping[str, str]) -> bool:
    """Return whether the request asks for a fresh answer (no-cache, no-store, Pragma)."""
    directives = parse_cache_control([headers.get("cache-control", "")])
    if "no-cache" in directives or "no-store" in directives:
        return True
    return "no-cache" in headers.get("pragma", "").lower()


def _vary_refusal(pairs: Sequence[tuple[str, str]], vary: Sequence[str]) -> str:
    """Return why the response's Vary forbids storing it under this key, or ''."""
    keyed = set(vary)
    for name, value in pairs:
        if name != "vary":
            continue
        for field in value.split(","):
            field = field.strip().lower()
            if field == "*":
                return "vary *"
            if field and field not in keyed:
                return f"vary {field} not keyed"
    return ""


def _age(pairs: Sequence[tuple[str, str]]) -> int:
    """Return the upstream's Age in seconds (0 when absent or malformed)."""
    for name, value in pairs:
        if name == "age":
            seconds = _seconds(value)
            return int(seconds) if seconds is not None else 0
    return 0


def _seconds(text: str | None) -> int | None:
    """Parse delta-seconds (digits only); None when malformed."""
    if text is None or not text.strip().isdigit() or not text.strip().isascii():
        return None
    return int(text.strip())


def _split_outside_quotes(value: str) -> list[str]:
    """Split a header value on commas that are not inside a quoted string."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts
