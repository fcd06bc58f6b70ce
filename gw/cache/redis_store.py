"""The response cache in Redis: one store, and one fill per key, across every host.

Keys under ``key_prefix`` (``gw:cache:``)::

    e:<route hash>:<digest>   the entry (``gw.cache.pack``), expiring with it (PX)
    l:<digest>                the fill lock: SET NX PX lock_timeout, a random token
    d:<digest>                "the last fill was not cacheable", for decline_seconds

Followers poll for the entry or the lock's end (5 ms, growing to 50 ms) until
``lock_timeout``; a killed leader's lock expires after ``lock_timeout``. Redis bounds the size
itself: give it a ``maxmemory`` and ``maxmemory-policy volatile-ttl`` (entries carry a TTL).

Every Redis failure is a miss (or a lease without a lock), logged once per outage with a
count (``gw.observe.incident``); no redis-py exception leaves this module, and none fails a request.
The host's adapter (``gw.host.redis``) connects and translates; ``redis`` is imported on first
use.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from hashlib import sha256
from typing import Any

from gw.cache import CachedResponse, CacheKey, Lease, pack, unpack
from gw.cache.settings import CacheStoreSettings
from gw.host import redis as host_redis
from gw.observe.incident import IncidentLog

log = logging.getLogger("gw")

FIRST_POLL = 0.005
LONGEST_POLL = 0.05
# Delete the lock only if it is still ours (it may have expired and been taken by another).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisCache:
    """Cached responses in one Redis, shared by every worker of every host that uses it."""

    def __init__(self, settings: CacheStoreSettings) -> None:
        self.settings = settings
        self.prefix = settings.key_prefix
        self._client = host_redis.connect(settings.backend, settings.redis_timeout)
        self._release_script = self._client.register_script(_RELEASE)
        # One warning per outage, with counts (not one per request).
        self._incidents = IncidentLog(log, "cache redis")
        self.counts = dict.fromkeys(
            ("hits", "misses", "stores", "waits", "lock_timeouts", "errors"), 0
        )

    def lookup(self, key: CacheKey) -> CachedResponse | None:
        """Return the fresh entry for ``key``, or None (absent, expired, Redis failing)."""
        data = None
        with self._guard("lookup"):
            data = self._client.get(self._entry(key))
        entry = unpack(data, time.time()) if isinstance(data, bytes) else None
        self.counts["hits" if entry else "misses"] += 1
        return entry

    def lead(self, key: CacheKey) -> Lease:
        """Take ``key``'s fill lock in Redis, or wait for its filler up to ``lock_timeout``."""
        lease = Lease()  # without Redis: fetch, as if no one else were filling
        with self._guard("lead"):
            if self._client.exists(self.prefix + "d:" + key.digest):
                return Lease(bypass=True)
            token = os.urandom(16).hex()
            if self._try_lock(key, token):
                return Lease(leader=True, release=lambda: self._unlock(key, token))
            self.counts["waits"] += 1
            lease = self._wait(key, token)
        return lease

    def store(
        self,
        key: CacheKey,
        status: int,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        ttl: float,
        age: int = 0,
    ) -> bool:
        """Store a response for ``ttl`` seconds; return False if it was not stored."""
        if ttl <= 0:
            return False
        now = time.time()
        data = pack(key, status, headers, body, now, now + ttl, age)
        with self._guard("store"):
            self._client.set(self._entry(key), data, px=max(1, int(ttl * 1000)))
            self.counts["stores"] += 1
            return True
        return False

    def decline(self, key: CacheKey) -> None:
        """Record that ``key``'s fill was not cacheable: misses skip the lock for a while."""
        milliseconds = int(self.settings.decline_seconds * 1000)
        if milliseconds > 0:
            with self._guard("decline"):
                self._client.set(self.prefix + "d:" + key.digest, b"1", px=milliseconds)

    def purge(self, key: CacheKey | str | None = None, route: str | None = None) -> int:
        """Delete the entries of ``key`` (a CacheKey or digest), of ``route``, or all."""
        if isinstance(key, CacheKey):
            if route not in (None, key.route):
                return 0
            route, key = key.route, key.digest
        folder = host_redis.glob_escape(_route_hash(route)) if route is not None else "*"
        digest = host_redis.glob_escape(key) if key else "*"
        removed = self._delete(f"{host_redis.glob_escape(self.prefix)}e:{folder}:{digest}")
        self._delete(f"{host_redis.glob_escape(self.prefix)}d:{digest}")
        return removed

    def stats(self) -> dict[str, Any]:
        """Return the live entry count under the prefix and this process's counters."""
        entries = None
        with self._guard("stats"):
            pattern = host_redis.glob_escape(self.prefix) + "e:*"
            entries = sum(1 for _ in self._client.scan_iter(match=pattern, count=500))
        return {"backend": "redis", "prefix": self.prefix, "entries": entries, **self.counts}

    def close(self) -> None:
        """Close every pooled connection."""
        self._client.close()

    def _entry(self, key: CacheKey) -> str:
        return f"{self.prefix}e:{_route_hash(key.route)}:{key.digest}"

    def _try_lock(self, key: CacheKey, token: str) -> bool:
        timeout = int(self.settings.lock_timeout * 1000)
        return bool(self._client.set(self.prefix + "l:" + key.digest, token, nx=True, px=timeout))

    def _unlock(self, key: CacheKey, token: str) -> None:
        with self._guard("release"):
            self._release_script(keys=[self.prefix + "l:" + key.digest], args=[token])

    def _wait(self, key: CacheKey, token: str) -> Lease:
        """Poll until the entry appears (re-look it up), the lock frees (lead), or time's up."""
        deadline = time.monotonic() + self.settings.lock_timeout
        pause = FIRST_POLL
        while time.monotonic() < deadline:
            time.sleep(pause)
            pause = min(pause * 2, LONGEST_POLL)
            if self._client.exists(self._entry(key)):
                return Lease(waited=True)
            if self._try_lock(key, token):
                return Lease(leader=True, waited=True, release=lambda: self._unlock(key, token))
        self.counts["lock_timeouts"] += 1
        return Lease(waited=True)

    def _delete(self, pattern: str) -> int:
        """Delete every key matching ``pattern``; return how many went."""
        removed = 0
        with self._guard("purge"):
            batch: list[bytes] = []
            for name in self._client.scan_iter(match=pattern, count=500):
                batch.append(name)
                if len(batch) >= 500:
                    removed += int(self._client.unlink(*batch))
                    batch = []
            if batch:
                removed += int(self._client.unlink(*batch))
        return removed

    @contextmanager
    def _guard(self, operation: str) -> Iterator[None]:
        """Count and swallow any Redis or socket failure: the caller goes on as on a miss."""
        try:
            with host_redis.translated(operation):
                yield
        except host_redis.RedisUnavailable as ex:
            self.counts["errors"] += 1
            self._incidents.failed(f"{operation}: {ex.__cause__}", "served as a miss")
        else:
            self._incidents.succeeded()


def _route_hash(route: str) -> str:
    """Return the short hash that groups a route's entries (route names are free text)."""
    return sha256(route.encode("utf-8", "surrogatepass")).hexdigest()[:16]
