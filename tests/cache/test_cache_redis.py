"""The Redis store against a real redis-server: the same behaviour as the shared store, one
fill per key across processes (hosts), and a broken Redis that is only ever a miss."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from gw.cache import open_cache
from gw.cache.keys import CacheKey, cache_key
from gw.cache.redis_store import RedisCache
from gw.cache.settings import CacheStoreSettings
from tests.fixtures.redis_server import RedisServer

FORK = multiprocessing.get_context("fork")
FETCH_SECONDS = 0.3


def _key(path: str = "/a", route: str = "r", user: str | None = None) -> CacheKey:
    return cache_key(route, "GET", "h", path, "", {}, (), user)


@pytest.fixture
def cache(redis_server: RedisServer) -> Iterator[RedisCache]:
    settings = CacheStoreSettings(backend=redis_server.url, redis_timeout=1.0)
    store = open_cache(settings)
    assert isinstance(store, RedisCache)
    store.purge()
    yield store
    store.close()


def test_entries_round_trip_per_user_and_expire(cache: RedisCache) -> None:
    assert cache.store(_key(user="alice"), 200, [("A", "1"), ("Age", "2")], b"hi", ttl=0.3, age=2)
    entry = cache.lookup(_key(user="alice"))
    assert entry is not None and (entry.status, entry.body, entry.headers) == (
        200,
        b"hi",
        (("A", "1"),),
    )
    assert entry.age == 2
    assert cache.lookup(_key(user="bob")) is None
    time.sleep(0.35)
    assert cache.lookup(_key(user="alice")) is None


def test_purge_by_key_route_digest_and_all(cache: RedisCache) -> None:
    for route in ("a", "b"):
        for path in ("/1", "/2"):
            cache.store(_key(path, route), 200, [], b"x", ttl=30)
    assert cache.purge(key=_key("/1", "a")) == 1
    assert cache.lookup(_key("/1", "a")) is None and cache.lookup(_key("/2", "a")) is not None
    assert cache.purge(key=_key("/2", "a").digest) == 1
    assert cache.purge(route="b") == 2
    cache.store(_key(), 200, [], b"x", ttl=30)
    assert cache.stats()["entries"] == 1
    assert cache.purge() == 1


def test_leases_lead_wait_and_decline(cache: RedisCache) -> None:
    key = _key()
    lease = cache.lead(key)
    assert lease.leader and not lease.waited
    seen: list[bool] = []
    follower = threading.Thread(target=lambda: seen.append(_waited_for_entry(cache, key)))
    follower.start()
    time.sleep(0.05)
    cache.store(key, 200, [], b"filled", ttl=30)
    lease.release()
    follower.join(5)
    assert seen == [True]
    cache.decline(_key("/other"))
    assert cache.lead(_key("/other")).bypass


def _waited_for_entry(cache: RedisCache, key: CacheKey) -> bool:
    with cache.lead(key) as lease:
        return lease.waited and cache.lookup(key) is not None


def _serve(url: str, counter: str, start_at: float, lock_timeout: float, out: Connection) -> None:
    """One process (a host): four threads missing one key at ``start_at``, then fetching."""
    cache = RedisCache(
        CacheStoreSettings(backend=url, redis_timeout=1.0, lock_timeout=lock_timeout)
    )
    key, bodies = _key("/stampede"), []

    def request() -> None:
        time.sleep(max(0.0, start_at - time.monotonic()))
        entry = cache.lookup(key)
        if entry is None:
            with cache.lead(key):
                entry = cache.lookup(key)
                if entry is None:
                    _count(counter)
                    time.sleep(FETCH_SECONDS)
                    cache.store(key, 200, [], b"upstream", ttl=30)
                    entry = cache.lookup(key)
        bodies.append(entry.body if entry else b"")

    threads = [threading.Thread(target=request) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.send(bodies)


def _count(counter: str) -> None:
    fd = os.open(counter, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, b"f")
    os.close(fd)


def test_a_burst_across_hosts_fills_once(redis_server: RedisServer, tmp_path: Path) -> None:
    counter = str(tmp_path / "fetches")
    start_at = time.monotonic() + 0.5
    pipes, children = [], []
    for _ in range(4):
        receive, send = FORK.Pipe(duplex=False)
        args = (redis_server.url, counter, start_at, 5.0, send)
        child = FORK.Process(target=_serve, args=args)
        child.start()
        pipes.append(receive)
        children.append(child)
    bodies = [body for pipe in pipes if pipe.poll(20) for body in pipe.recv()]
    for child in children:
        child.join(5)
    assert bodies == [b"upstream"] * 16
    assert Path(counter).read_bytes() == b"f"


def test_an_abandoned_fill_lock_expires(cache: RedisCache, redis_server: RedisServer) -> None:
    short = RedisCache(CacheStoreSettings(backend=redis_server.url, lock_timeout=0.2))
    short.lead(_key())  # never released, as by a killed worker
    started = time.monotonic()
    with short.lead(_key()) as lease:
        assert lease.leader and lease.waited
    assert time.monotonic() - started < 1.0
    short.close()


def test_unreachable_redis_is_a_miss_never_an_error() -> None:
    settings = CacheStoreSettings(backend="redis://127.0.0.1:1/0", redis_timeout=0.05)
    cache = RedisCache(settings)
    assert cache.lookup(_key()) is None
    lease = cache.lead(_key())
    assert not lease.leader and not lease.bypass
    assert not cache.store(_key(), 200, [], b"x", ttl=30)
    assert cache.purge() == 0
    assert cache.stats()["errors"] >= 4


def test_paused_redis_answers_miss_within_the_timeout(
    cache: RedisCache, redis_server: RedisServer
) -> None:
    fast = RedisCache(CacheStoreSettings(backend=redis_server.url, redis_timeout=0.05))
    fast.lookup(_key())  # connect first
    redis_server.pause()
    try:
        started = time.monotonic()
        assert fast.lookup(_key()) is None
        assert time.monotonic() - started < 1.0
    finally:
        redis_server.resume()
        fast.close()
