"""Response cache: entries shared by the workers of a host (files), or by many hosts (Redis).

- ``gw.cache.keys``: the cache key (pure).
- ``gw.cache.policy``: what may be served and stored, for how long (pure).
- ``gw.cache.store.ResponseCache``: files under ``GW_RUNTIME_DIR/cache``, fill locks that
  collapse concurrent misses of a key into one upstream fetch per host.
- ``gw.cache.redis_store.RedisCache``: the same API in Redis, one fetch across hosts.

Both backends answer the ``Cache`` protocol below; ``open_cache`` picks one from settings.
A backend never fails a request: a broken store is a miss, logged.
"""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from gw.cache.keys import CacheKey

if TYPE_CHECKING:
    from gw.cache.settings import CacheStoreSettings

__all__ = ["Cache", "CacheKey", "CachedResponse", "Lease", "open_cache"]

_MAGIC = b"GWC1"
_LENGTH = struct.Struct(">I")
# Headers that describe one hop or one answer, never a stored entry: the cache adds its own.
_UNSTORED = frozenset({"age", "x-cache", "set-cookie"})


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """A fresh stored response: what a hit answers with."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    age: int
    expires: float
    route: str

    def response_headers(self) -> list[tuple[str, str]]:
        """Return the stored headers plus ``Age`` and ``X-Cache: HIT``."""
        return [*self.headers, ("Age", str(self.age)), ("X-Cache", "HIT")]


class Lease:
    """The right to fill one key: ``with cache.lead(key) as lease: ...``.

    ``leader``: this caller holds the key's fill lock until ``release`` (or the ``with``
    block ends); other misses of the key wait for it. ``waited``: another caller was filling
    the key, so look it up again before fetching. ``bypass``: a recent fill of this key was
    not cacheable; fetch without storing and without waiting. Whatever the flags say, a
    caller that finds no entry after the lease fetches from the upstream itself.
    """

    __slots__ = ("_lock", "_release", "bypass", "leader", "waited")

    def __init__(
        self,
        leader: bool = False,
        waited: bool = False,
        bypass: bool = False,
        release: Callable[[], None] | None = None,
    ) -> None:
        self.leader = leader
        self.waited = waited
        self.bypass = bypass
        self._release = release
        self._lock = threading.Lock()

    def release(self) -> None:
        """Let the waiting callers in (once; later calls do nothing)."""
        with self._lock:
            release, self._release = self._release, None
        if release is not None:
            release()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Cache(Protocol):
    """What the pipeline needs from a cache backend."""

    def lookup(self, key: CacheKey) -> CachedResponse | None: ...

    def lead(self, key: CacheKey) -> Lease: ...

    def store(
        self,
        key: CacheKey,
        status: int,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        ttl: float,
        age: int = 0,
    ) -> bool: ...

    def decline(self, key: CacheKey) -> None: ...

    def purge(self, key: CacheKey | str | None = None, route: str | None = None) -> int: ...

    def stats(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


def open_cache(settings: CacheStoreSettings, runtime_dir: str | None = None) -> Cache:
    """Open the configured backend (in a worker, after the fork)."""
    if settings.backend == "shared":
        from gw.cache.store import ResponseCache, runtime_cache_dir

        return ResponseCache(settings, runtime_dir or runtime_cache_dir())
    from gw.cache.redis_store import RedisCache

    return RedisCache(settings)


def pack(
    key: CacheKey,
    status: int,
    headers: Sequence[tuple[str, str]],
    body: bytes,
    stored: float,
    expires: float,
    age: int,
) -> bytes:
    """Serialize an entry: magic, header length, JSON header, then the body bytes."""
    kept = [[name, value] for name, value in headers if name.lower() not in _UNSTORED]
    header = {
        "status": status,
        "headers": kept,
        "stored": stored,
        "expires": expires,
        "age": age,
        "route": key.route,
        "key": key.description,
    }
    data = json.dumps(header, separators=(",", ":")).encode()
    return b"".join((_MAGIC, _LENGTH.pack(len(data)), data, body))


def unpack(data: bytes, now: float) -> CachedResponse | None:
    """Return the entry in ``data`` if it is well-formed and fresh at ``now``, else None."""
    if data[:4] != _MAGIC or len(data) < 8:
        return None
    (length,) = _LENGTH.unpack_from(data, 4)
    try:
        header = json.loads(data[8 : 8 + length])
        expires = float(header["expires"])
        if expires <= now:
            return None
        age = int(now - float(header["stored"])) + int(header["age"])
        headers = tuple((str(name), str(value)) for name, value in header["headers"])
        status, route = int(header["status"]), str(header["route"])
    except (ValueError, KeyError, TypeError):
        return None
    return CachedResponse(status, headers, data[8 + length :], max(age, 0), expires, route)
