"""The Redis Cluster backend beyond the shared contract: a request whose buckets live in
different hash slots takes from none of them when one refuses (taken tokens are given
back), stays exact under contention, and a dead cluster is LimiterUnavailable in time."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from redis.crc import key_slot

from gw.limits import LimiterUnavailable, Rate
from gw.limits.redis_cluster import RedisClusterLimiter
from tests.fixtures.redis_cluster import RedisCluster, session_cluster

pytest.importorskip("redis")


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    yield from session_cluster()


@pytest.fixture
def limiter(cluster: RedisCluster) -> Iterator[RedisClusterLimiter]:
    limiter = RedisClusterLimiter(cluster.url, timeout=2.0, prefix=f"gw:t:{uuid.uuid4().hex}:")
    yield limiter
    limiter.close()


def in_slot_order(prefix: str) -> tuple[str, str]:
    """Return two keys whose slots differ, the first one's lower (it is taken from first)."""
    first = "a"
    for i in range(100):
        second = f"b-{i}"
        slots = key_slot((prefix + first).encode()), key_slot((prefix + second).encode())
        if slots[0] != slots[1]:
            return (first, second) if slots[0] < slots[1] else (second, first)
    raise AssertionError("no two keys in different slots")


def test_tokens_taken_before_a_refusal_in_another_slot_are_given_back(
    limiter: RedisClusterLimiter,
) -> None:
    low, high = in_slot_order(limiter.prefix)
    roomy, tight = Rate(5, 60), Rate(1, 60)
    assert limiter.check(low, roomy).allowed  # 4 left
    assert limiter.check(high, tight).allowed  # none left
    for order in ([(low, roomy), (high, tight)], [(high, tight), (low, roomy)]):
        assert [d.allowed for d in limiter.check_all(order)] != [True, True]
    seen = limiter.peek(low, roomy)
    assert seen is not None and seen.remaining == 4


def test_a_bucket_given_back_to_full_is_forgotten(limiter: RedisClusterLimiter) -> None:
    low, high = in_slot_order(limiter.prefix)
    limiter.check(high, Rate(1, 60))
    refused = limiter.check_all([(low, Rate(5, 60)), (high, Rate(1, 60))])
    assert [d.allowed for d in refused] == [True, False]
    assert limiter.peek(low, Rate(5, 60)) is None
    assert limiter.stats()["used"] == 1


def test_contention_across_slots_never_admits_more_and_gives_every_token_back(
    limiter: RedisClusterLimiter,
) -> None:
    """Threads sending requests under a tight and a roomy bucket in two slots: exactly the
    tight bucket's burst is admitted, and the roomy one lost exactly that many tokens."""
    low, high = in_slot_order(limiter.prefix)
    roomy, tight = Rate(300, 3600), Rate(40, 3600)
    counts = {"admitted": 0, "refused": 0}
    lock = threading.Lock()
    stop_at = time.monotonic() + 1.5

    def run(flip: bool) -> None:
        buckets = [(low, roomy), (high, tight)]
        while time.monotonic() < stop_at:
            outcome = limiter.check_all(buckets[::-1] if flip else buckets)
            with lock:
                counts["admitted" if all(d.allowed for d in outcome) else "refused"] += 1

    threads = [threading.Thread(target=run, args=(i % 2 == 0,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert counts["admitted"] == 40 and counts["refused"] > 0
    seen = limiter.peek(low, roomy)
    assert seen is not None and seen.remaining == 300 - 40


def test_an_unreachable_cluster_is_unavailable_in_time() -> None:
    started = time.monotonic()
    with pytest.raises(LimiterUnavailable, match="redis connect failed"):
        RedisClusterLimiter("redis+cluster://127.0.0.1:9", timeout=0.2)
    assert time.monotonic() - started < 2


def test_a_stopped_node_is_unavailable_in_time() -> None:
    with RedisCluster() as own:
        limiter = RedisClusterLimiter(own.url, timeout=0.2)
        keys = [(f"k{i}", Rate(10, 60)) for i in range(12)]  # some on every node
        assert all(d.allowed for d in limiter.check_all(keys))
        own.nodes[1].stop()
        started = time.monotonic()
        with pytest.raises(LimiterUnavailable):
            limiter.check_all(keys)
        assert time.monotonic() - started < 3
        limiter.close()
