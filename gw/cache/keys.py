"""The cache key: which stored response a request may be answered with.

Pure module. The key is a SHA-256 over every part of the request that can change the
response: route name, method (HEAD shares GET's entry), host, canonical path, normalized
query, the route's listed request headers, and the caller's identity on authenticated routes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

KEY_VERSION = 1


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
) -> CacheKey:
    """Return the key of a request.

    Args:
        route: the matched route's name (a reload that moves a path to another route does not
            serve the old route's entries).
        method: the request method; HEAD is keyed as GET.
        host: the Host (or absolute-form authority); lower-cased, port and final dot dropped.
        path: the canonical path (``gw.paths.canonicalize``), never the raw one.
        query: the raw query string, without ``?``.
        headers: the request's headers by lower-case name.
        vary: lower-case names of the headers to key on (the route's ``vary_headers``).
        user: the verified subject on an authenticated route, else None.
        api_key: the verified API key id on an authenticated route, else None.

    Warning:
        APPSEC: pass ``user`` on every route that authenticates, even when the upstream
        answers everyone alike: without it, one caller's response is served to another.
    """
    method = "GET" if method.upper() == "HEAD" else method.upper()
    host = normalize_host(host)
    norm_query = normalize_query(query)
    listed = [[name, headers.get(name)] for name in vary]
    # PERF+APPSEC: a JSON array is unambiguous (no two different requests can build the same
    # text by moving a separator from one field into another) and cheap to build.
    text = json.dumps(
        [KEY_VERSION, route, method, host, path, norm_query, listed, user, api_key],
        separators=(",", ":"),
    )
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    target = f"{path}?{norm_query}" if norm_query else path
    description = f"{route} {method} {host}{target}" + (" (per user)" if user else "")
    return CacheKey(digest=digest, route=route, description=description)


def normalize_query(query: str) -> str:
    """Sort the parameters by name then value, keeping their raw bytes; drop empty ones.

    ``b=2&a=1`` and ``a=1&b=2`` name one entry; ``a=%41`` and ``a=A`` stay apart (the
    upstream decides what an escape means); ``a`` and ``a=`` stay apart.
    """
    if not query:
        return ""
    params = [param for param in query.split("&") if param]
    params.sort(key=_name_value)
    return "&".join(params)


def normalize_host(host: str | None) -> str:
    """Lower-case a Host header, dropping its port and a final dot (``[::1]:80`` -> ``[::1]``)."""
    if not host:
        return ""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    return host.rpartition(":")[0].rstrip(".") if ":" in host else host.rstrip(".")


def _name_value(param: str) -> tuple[str, str, str]:
    """Split a raw ``name=value`` parameter for sorting (the whole text breaks ties)."""
    name, _, value = param.partition("=")
    return name, value, param
