"""The host a request is for: one effective host per request, checked once at the edge.

Pure module. RFC 9112 section 3.2: an HTTP/1.1 request carries exactly one valid ``Host``
field, else the answer is 400; when the target is in absolute form its authority is the
host, whatever ``Host`` says (section 3.2.2). The effective host computed here is the only one
used afterwards: for routing, the cache key, ``X-Forwarded-Host`` and ``preserve_host``.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from gw.errors import InvalidHost, UnknownHost

# APPSEC: stricter than RFC 3986's reg-name on purpose. DNS names and IP addresses need
# letters, digits, '-', '.' and '_'; sub-delims (',' ';' '=' ...), '%', '@', '/' and spaces
# are refused, so two Host lines joined by a server ('a,b'), userinfo ('gw:@evil.example')
# and paths ('a b/c@d') can never pose as a host.
_HOST = re.compile(r"(?P<name>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(?P<port>[0-9]{0,5}))?")
_SCHEME_AUTHORITY = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#]*)")
_MAX_HOST = 255 + 1 + 5


@dataclass(frozen=True, slots=True)
class Authority:
    """The effective host of one request: ``host`` as received (port included, lower-cased)
    and ``name``, without the port and a trailing dot, for matching."""

    host: str
    name: str


def effective_host(raw_target: str, host_fields: str | None, version: str) -> Authority | None:
    """Return the request's effective host, or None for an HTTP/1.0 request without one.

    ``host_fields`` is the Host header as the server gives it (repeated fields joined by ',').

    Raises:
        InvalidHost: Host is missing (HTTP/1.1), repeated or invalid, or an absolute-form
            target has another scheme than http(s), userinfo, or an invalid authority.
    """
    header = _parse(host_fields) if host_fields is not None else None
    if host_fields is None and version not in ("HTTP/1.0", "HTTP/0.9"):
        raise InvalidHost("an HTTP/1.1 request must have a Host header")
    # PERF: an origin-form target (nearly every request) has no authority to look for.
    absolute = None if raw_target[:1] == "/" else _SCHEME_AUTHORITY.match(raw_target)
    if absolute is None:
        return header
    if absolute["scheme"].lower() not in ("http", "https"):
        raise InvalidHost(f"the request target's scheme {absolute['scheme']!r} is not http(s)")
    return _parse(absolute["authority"])


# PERF: a gateway sees few Host values; parsing one is a regex and a few string calls.
# APPSEC: the key is the exact header text and the entry the immutable value parsing it gives;
# a refused value raises and is never cached, and the cache is bounded (LRU).
@functools.lru_cache(maxsize=1024)
def _parse(value: str) -> Authority:
    value = value.strip(" \t")
    match = _HOST.fullmatch(value) if len(value) <= _MAX_HOST else None
    if match is None:
        raise _refusal(value)
    name = match["name"].lower()
    if name.startswith("["):
        try:
            ipaddress.IPv6Address(name[1:-1])
        except ValueError:
            raise _refusal(value) from None
    elif name.strip(".") == "" or ".." in name:
        raise _refusal(value)
    return Authority(value.lower(), name.rstrip("."))


def _refusal(value: str) -> InvalidHost:
    return InvalidHost(f"the Host {value[:80]!r} is not a valid host[:port] (one Host field only)")


class HostAllowList:
    """``server.hosts``: the host names this gateway serves (exact, or ``*.suffix``)."""

    def __init__(self, entries: Iterable[str]) -> None:
        entries = [e.lower().rstrip(".") for e in entries]
        self._exact = frozenset(e for e in entries if not e.startswith("*."))
        self._suffixes = tuple(e[1:] for e in entries if e.startswith("*."))

    def check(self, authority: Authority | None) -> None:
        """Raise UnknownHost (421) unless the request's host is listed.

        APPSEC: a request for a host that is not listed never reaches a route: its Host could
        otherwise poison what an upstream builds from ``X-Forwarded-Host`` (links, redirects).
        """
        if authority is not None:
            name = authority.name
            if name in self._exact or any(name.endswith(s) for s in self._suffixes):
                return
        shown = authority.host if authority else "(none)"
        raise UnknownHost(f"this gateway does not serve the host {shown}")
