"""The host's shared store, in one process: entries, expiry, size bound, purge, leases."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from gw.cache import CachedResponse
from gw.cache.keys import CacheKey, cache_key
from gw.cache.settings import CacheStoreSettings
from gw.cache.store import ResponseCache, reset_store


def _key(path: str = "/a", route: str = "r", user: str | None = None) -> CacheKey:
    return cache_key(route, "GET", "h", path, "", {}, (), user)


def _hit(store: ResponseCache, key: CacheKey) -> CachedResponse:
    entry = store.lookup(key)
    assert entry is not None
    return entry


def test_stored_response_comes_back_whole(store: ResponseCache) -> None:
    key = _key()
    headers = [("Content-Type", "text/plain"), ("X-Cache", "MISS"), ("Age", "3")]
    assert store.store(key, 203, headers, b"hello\x00world", ttl=30, age=3)
    entry = _hit(store, key)
    assert (entry.status, entry.body, entry.route) == (203, b"hello\x00world", "r")
    assert entry.headers == (("Content-Type", "text/plain"),)
    assert entry.age == 3
    assert entry.response_headers()[-2:] == [("Age", "3"), ("X-Cache", "HIT")]


def test_absent_key_and_other_user_miss(store: ResponseCache) -> None:
    store.store(_key(user="alice"), 200, [], b"alice's", ttl=30)
    assert store.lookup(_key(user="bob")) is None
    assert store.lookup(_key()) is None
    assert _hit(store, _key(user="alice")).body == b"alice's"


def test_entry_expires(store: ResponseCache) -> None:
    store.store(_key(), 200, [], b"x", ttl=0.05)
    assert store.lookup(_key()) is not None
    time.sleep(0.08)
    assert store.lookup(_key()) is None


def test_age_grows_while_stored(store: ResponseCache, monkeypatch: pytest.MonkeyPatch) -> None:
    store.store(_key(), 200, [], b"x", ttl=30, age=2)
    later = time.time() + 5
    monkeypatch.setattr(time, "time", lambda: later)
    assert _hit(store, _key()).age == 7


def test_writes_are_atomic_renames_that_leave_no_temporary_files(store: ResponseCache) -> None:
    key = _key()
    store.store(key, 200, [], b"old", ttl=30)
    path = store._path(key)
    before = os.stat(path).st_ino
    store.store(key, 200, [], b"new", ttl=30)
    assert os.stat(path).st_ino != before  # a new file renamed over the old, not rewritten
    assert _hit(store, key).body == b"new"
    assert os.listdir(os.path.dirname(path)) == [key.digest]


def test_readers_never_see_a_partial_entry(store: ResponseCache) -> None:
    """Readers racing a writer see one whole body or the other, never a mix or a miss."""
    key = _key()
    bodies = (b"a" * 3000, b"b" * 5000)
    store.store(key, 200, [], bodies[0], ttl=30)
    stop = time.monotonic() + 0.5
    seen: set[bytes] = set()

    def write() -> None:
        i = 0
        while time.monotonic() < stop:
            store.store(key, 200, [], bodies[i % 2], ttl=30)
            i += 1

    writer = threading.Thread(target=write)
    writer.start()
    while time.monotonic() < stop:
        entry = store.lookup(key)
        assert entry is not None
        seen.add(entry.body)
    writer.join()
    assert seen <= set(bodies)


def test_corrupt_entry_is_a_miss(store: ResponseCache) -> None:
    key = _key()
    store.store(key, 200, [], b"x", ttl=30)
    Path(store._path(key)).write_bytes(b"GWC1\x00\x00\x00\x05{nope")
    assert store.lookup(key) is None
    Path(store._path(key)).write_bytes(b"")
    assert store.lookup(key) is None


def test_size_stays_bounded_and_the_oldest_go_first(store: ResponseCache) -> None:
    limit = store.settings.max_bytes
    keys = [_key(f"/{i}") for i in range(200)]
    for key in keys:
        assert store.store(key, 200, [], b"x" * 1000, ttl=30)
        assert store.stats()["bytes"] <= limit
    assert store.lookup(keys[-1]) is not None
    assert store.lookup(keys[0]) is None
    assert store.stats()["evicted"] > 0


def test_expired_entries_are_evicted_before_fresh_ones(store: ResponseCache) -> None:
    fresh = [_key(f"/fresh{i}") for i in range(20)]
    for key in fresh:
        store.store(key, 200, [], b"x" * 1000, ttl=30)
    for i in range(30):
        store.store(_key(f"/short{i}"), 200, [], b"x" * 1000, ttl=0.01)
    time.sleep(0.02)
    for i in range(15):
        store.store(_key(f"/late{i}"), 200, [], b"x" * 1000, ttl=30)
    assert all(store.lookup(key) is not None for key in fresh)


def test_an_entry_larger_than_a_tenth_of_the_store_is_refused(store: ResponseCache) -> None:
    assert not store.store(_key(), 200, [], b"x" * 7000, ttl=30)
    assert store.lookup(_key()) is None


def test_purge_by_key_route_digest_and_all(store: ResponseCache) -> None:
    for route in ("a", "b"):
        for path in ("/1", "/2"):
            store.store(_key(path, route), 200, [], b"x", ttl=30)
    assert store.purge(key=_key("/1", "a")) == 1
    assert store.lookup(_key("/1", "a")) is None and store.lookup(_key("/2", "a")) is not None
    assert store.purge(key=_key("/2", "a").digest) == 1
    assert store.purge(key=_key("/1", "b"), route="a") == 0
    assert store.purge(route="b") == 2
    assert store.lookup(_key("/1", "b")) is None
    store.store(_key(), 200, [], b"x", ttl=30)
    assert store.purge() == 1
    assert store.stats()["entries"] == 0


def test_reset_store_empties_it(tmp_path: Path) -> None:
    directory = str(tmp_path / "c")
    cache = ResponseCache(CacheStoreSettings(), directory)
    cache.store(_key(), 200, [], b"x", ttl=30)
    reset_store(directory)
    assert cache.lookup(_key()) is None
    assert cache.stats()["counted_bytes"] == 0
    cache.close()


def test_first_lease_leads_without_waiting(store: ResponseCache) -> None:
    with store.lead(_key()) as lease:
        assert (lease.leader, lease.waited, lease.bypass) == (True, False, False)
    with store.lead(_key()) as again:
        assert again.leader and not again.waited


def test_second_thread_waits_for_the_leader_then_finds_the_entry(store: ResponseCache) -> None:
    key = _key()
    lease = store.lead(key)
    seen: list[tuple[bool, CachedResponse | None]] = []

    def follow() -> None:
        with store.lead(key) as mine:
            seen.append((mine.waited, store.lookup(key)))

    follower = threading.Thread(target=follow)
    follower.start()
    time.sleep(0.05)
    assert not seen  # still waiting for the leader
    store.store(key, 200, [], b"filled", ttl=30)
    lease.release()
    follower.join(5)
    assert seen[0][0] and seen[0][1] is not None and seen[0][1].body == b"filled"


def test_lease_wait_ends_at_lock_timeout(tmp_path: Path) -> None:
    cache = ResponseCache(CacheStoreSettings(lock_timeout=0.1), str(tmp_path))
    held = cache.lead(_key())
    result: list[tuple[bool, bool]] = []
    waiter = threading.Thread(target=lambda: result.append(_flags(cache)))
    waiter.start()
    waiter.join(5)
    held.release()
    assert result == [(False, True)]  # not the leader, but free to fetch itself
    cache.close()


def _flags(cache: ResponseCache) -> tuple[bool, bool]:
    with cache.lead(_key()) as lease:
        return lease.leader, lease.waited


def test_declined_key_skips_the_lock_for_a_while(tmp_path: Path) -> None:
    cache = ResponseCache(CacheStoreSettings(decline_seconds=0.1), str(tmp_path))
    held = cache.lead(_key())
    cache.decline(_key())
    assert cache.lead(_key()).bypass  # no wait behind the holder
    held.release()
    time.sleep(0.12)
    with cache.lead(_key()) as lease:
        assert lease.leader and not lease.bypass
    cache.close()
