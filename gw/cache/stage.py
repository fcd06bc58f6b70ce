"""The cache stage: serve a fresh stored response, or fill the store once per host.

Adapter between the pipeline and ``gw.cache`` (keys and policy are pure; the store is a
shared directory or Redis). The store is opened lazily in each worker, after the fork.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gw.cache import Cache, CachedResponse, CacheKey, Lease, open_cache
from gw.cache.keys import cache_key
from gw.cache.policy import Storage, request_bypass, response_ttl
from gw.cache.settings import CacheStoreSettings, RouteCacheSettings
from gw.core.exchange import Outcome
from gw.core.headers import HOP_BY_HOP, response_headers
from gw.core.request import Request
from gw.host import process
from gw.upstream.client import UpstreamResponse


@dataclass(frozen=True)
class Lookup:
    """What the cache said about one request."""

    key: CacheKey | None  # None: the request bypasses the cache
    hit: CachedResponse | None = None
    lease: Lease | None = None  # held while this request fills the key


class CacheStage:
    """Look requests up, lead fills, and store what may be stored."""

    def __init__(self, settings: CacheStoreSettings) -> None:
        self.settings = settings
        self._cache: Cache | None = None
        self._pid = -1

    def serve(
        self,
        request: Request,
        route: str,
        rules: RouteCacheSettings,
        forward: Callable[[], UpstreamResponse],
        relay: Callable[[UpstreamResponse], Outcome],
        answer: Callable[[int, list[tuple[str, str]], bytes], Outcome],
    ) -> Outcome:
        """Answer from the cache (``answer`` with the stored response), or ``forward`` and
        fill it (once per host for concurrent misses), or ``relay`` what may not be stored.
        ``X-Cache`` says which: HIT, MISS or BYPASS."""
        lookup = self.lookup(request, route, rules)
        if lookup.hit is not None:
            hit = lookup.hit
            return answer(hit.status, list(hit.response_headers()), hit.body)
        bypass = ("X-Cache", "BYPASS")
        if lookup.key is None or lookup.lease is None:
            request.exchange.add_headers.append(bypass)
            return relay(forward())
        try:
            upstream = forward()
            storage = self.storage(
                rules, upstream.status, upstream.headers, request.identity is not None
            )
            length = upstream.content_length
            if (
                storage.ttl > 0
                and request.method == "GET"
                and length is not None
                and length <= rules.max_body_bytes
            ):
                body = b"".join(upstream.body())
                self.store(lookup.key, upstream.status, upstream.headers, body, storage)
                request.exchange.add_headers.append(("X-Cache", "MISS"))
                return answer(upstream.status, response_headers(upstream.headers), body)
            if request.method == "GET":
                self.decline(lookup.key)
        finally:
            lookup.lease.release()
        request.exchange.add_headers.append(bypass)
        return relay(upstream)

    def lookup(self, request: Request, route: str, rules: RouteCacheSettings) -> Lookup:
        """Return a hit, or a lease to fill the key (None key: bypass).

        APPSEC: the verified caller (``request.identity``) is part of the key whenever the
        route authenticates, so one caller's response is never served to another. The host is
        the effective host as the upstream is told it (not stripped of its port), and the
        scheme the resolved client scheme (``ClientInfo.proto``): both are keyed, so an answer
        built for one host or scheme (links, redirects) is never served for another.
        """
        key, _ = key_for(request, route, rules)
        if key is None:
            return Lookup(None)
        cache = self._store()
        hit = cache.lookup(key)
        if hit is not None:
            return Lookup(key, hit)
        lease = cache.lead(key)
        if lease.bypass:
            lease.release()
            return Lookup(None)
        if lease.waited:
            hit = cache.lookup(key)  # another request filled it while we waited
            if hit is not None:
                lease.release()
                return Lookup(key, hit)
        return Lookup(key, None, lease)

    def storage(
        self,
        rules: RouteCacheSettings,
        status: int,
        headers: Sequence[tuple[str, str]],
        identity_keyed: bool,
    ) -> Storage:
        """How long the upstream's answer may be kept (ttl 0: not at all)."""
        return response_ttl(
            status, headers, rules.ttl, rules.statuses, rules.vary_headers, identity_keyed
        )

    def store(
        self,
        key: CacheKey,
        status: int,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        storage: Storage,
    ) -> None:
        kept = [(n, v) for n, v in headers if n.lower() not in HOP_BY_HOP]
        self._store().store(key, status, kept, body, storage.ttl, storage.age)

    def decline(self, key: CacheKey) -> None:
        """Tell waiting misses that this key's answer was not cacheable."""
        self._store().decline(key)

    def purge(self, key: str | None = None, route: str | None = None) -> int:
        return self._store().purge(key, route)

    def _store(self) -> Cache:
        if self._cache is None or self._pid != process.pid():
            self._cache = open_cache(self.settings)
            self._pid = process.pid()
        return self._cache


def key_for(
    request: Request, route: str, rules: RouteCacheSettings
) -> tuple[CacheKey | None, str | None]:
    """Return ``(key, None)`` for ``request`` on ``route``, or ``(None, why)`` when it
    bypasses the cache.

    APPSEC: the verified caller (``request.identity``) is part of the key whenever the route
    authenticates, so one caller's response is never served to another.
    """
    identity = request.identity
    user = identity.principal if identity else None
    api_key = identity.key_id if identity and identity.method == "api_key" else None
    method, request_headers = request.method, request.headers.by_name
    keyed = user is not None or api_key is not None
    bypass = request_bypass(method, request_headers, keyed, rules.honor_client_no_cache)
    if bypass is not None:
        return None, bypass
    key = cache_key(
        route,
        method,
        request.host,
        request.path,
        request.query,
        request_headers,
        rules.vary_headers,
        user,
        api_key,
        scheme=request.client.proto,
    )
    return key, None
