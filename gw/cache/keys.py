"""The cache key: which stored response a request may be answered with.

Pure module. The key is a SHA-256 over every part of the request that can change the
response: route name, method (HEAD shares GET's entry), scheme, host, canonical path,
normalized query, the route's listed request headers, and the caller's identity on
authenticated routes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# 2: repeated query parameters keep their order; scheme and whole host keyed. A new version
# keeps entries stored under the old rules (in a shared store) from ever being served.
KEY_VERSION = 2


@dataclass(frozen=True, slots=True)
class CacheKey:
    """A request's cache key: ``digest`` names the entry, ``description`` is for logs and purge.

    Warning:
        ``description`` holds the path and query, which may be personal data: log it at
        debug level only. It never holds the identity.
    """

    digest: str
    route: str
    description: str


def cache_key(
    route: str,
    method: str,
    host: str | None,
    path: str,
    query: str,
    headers: Mapping[str, str],
    vary: Sequence[str] = (),
    user: str | None = None,
    api_key: str | None = None,
    scheme: str = "http",
) -> CacheKey:
    """Return the key of a request.

    Args:
        route: the matched route's name (a reload that moves a path to another route does not
            serve the old route's entries).
        method: the request method; HEAD is keyed as GET.
        host: the effective host (absolute-form authority, else Host), as the upstream is
            told it; only its case is folded (see ``normalize_host``).
        path: the canonical path (``gw.core.paths.canonicalize``), never the raw one.
        query: the raw query string, without ``?``.
        headers: the request's headers by lower-case name.
        vary: lower-case names of the headers to key on (the route's ``vary_headers``).
        user: the verified subject on an authenticated route, else None.
        api_key: the verified API key id on an authenticated route, else None.
        scheme: the scheme the client used (``http``/``https``, as a trusted proxy's
            ``X-Forwarded-Proto`` says); the upstream is told it and may answer by it.

    Warning:
        APPSEC: pass ``user`` on every route that authenticates, even when the upstream
        answers everyone alike: without it, one caller's response is served to another.
    """
    method = "GET" if method.upper() == "HEAD" else method.upper()
    scheme = scheme.lower()
    host = normalize_host(host)
    norm_query = normalize_query(query)
    listed = [[name, headers.get(name)] for name in vary]
    # PERF+APPSEC: a JSON array is unambiguous (no two different requests can build the same
    # text by moving a separator from one field into another) and cheap to build.
    text = json.dumps(
        [KEY_VERSION, route, method, scheme, host, path, norm_query, listed, user, api_key],
        separators=(",", ":"),
    )
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    target = f"{path}?{norm_query}" if norm_query else path
    where = f"{scheme}://{host}{target}"
    description = f"{route} {method} {where}" + (" (per user)" if user else "")
    return CacheKey(digest=digest, route=route, description=description)


def normalize_query(query: str) -> str:
    """Sort the parameters by name only, keeping their raw bytes; drop empty ones.

    ``b=2&a=1`` and ``a=1&b=2`` name one entry; ``a=%41`` and ``a=A`` stay apart (the
    upstream decides what an escape means); ``a`` and ``a=`` stay apart.

    APPSEC: the sort is stable and looks at the name only, so repeated parameters keep the
    order the client sent them in: ``cb=evil&cb=good`` and ``cb=good&cb=evil`` are two
    entries, because an upstream may read either the first or the last value.
    """
    if not query:
        return ""
    params = [param for param in query.split("&") if param]
    params.sort(key=_name)
    return "&".join(params)


def normalize_host(host: str | None) -> str:
    """Return the host as keyed: the whole value, lower-cased (``[::1]:80`` stays whole).

    APPSEC: the upstream is told the host as the client sent it (``X-Forwarded-Host``, or
    ``Host`` with ``preserve_host``) and may build links and redirects from it, port
    included. Any part dropped here would let one client's ``Host: gw:@evil.example`` or
    ``Host: gw:1337`` fill the entry every client of ``gw`` is served. Only the case is
    folded: host names are case-insensitive, so that fold changes no link's meaning.
    """
    if not host:
        return ""
    return host.strip().lower()


def _name(param: str) -> str:
    """The raw name of a ``name=value`` parameter (the sort key)."""
    return param.partition("=")[0]
