"""The Redis backend beyond the shared contract: failures become LimiterUnavailable within
the timeout, the script survives a flush, keys expire, and hosts and processes share one
exact bucket."""

from __future__ import annotations

import multiprocessing
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from multiprocessing.connection import Connection

import pytest

from gw.limits import LimiterUnavailable, Rate
from gw.limits.redis_backend import RedisLimiter
from tests.fixtures.redis_server import RedisServer, require_redis_server

redis = pytest.importorskip("redis")
FORK = multiprocessing.get_context("fork")


@pytest.fixture
def prefix() -> str:
    return f"gw:test:{uuid.uuid4().hex}:"


@pytest.fixture
def limiter(redis_server: RedisServer, prefix: str) -> Iterator[RedisLimiter]:
    limiter = RedisLimiter(redis_server.url, timeout=2.0, prefix=prefix)
    yield limiter
    limiter.close()


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[object]:
    """A plain redis-py client, to look at what the limiter stored."""
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    """A server of this test's own, which it may freeze or stop."""
    with RedisServer(require_redis_server()) as server:
        yield server


def test_a_refused_connection_is_unavailable_and_no_redis_error_leaks() -> None:
    limiter = RedisLimiter("redis://127.0.0.1:9/0", timeout=0.2)
    started = time.monotonic()
    with pytest.raises(LimiterUnavailable) as caught:
        limiter.check("client", Rate(10, 60))
    assert time.monotonic() - started < 1
    assert not isinstance(caught.value, redis.RedisError)
    assert "redis check failed" in str(caught.value)


def test_a_frozen_redis_is_unavailable_within_the_timeout(own_server: RedisServer) -> None:
    limiter = RedisLimiter(own_server.url, timeout=0.05)
    assert limiter.check("client", Rate(3, 60)).remaining == 2
    own_server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(LimiterUnavailable):
            limiter.check("client", Rate(3, 60))
        waited = time.monotonic() - started
    finally:
        own_server.resume()
    assert 0.04 <= waited < 0.5
    # The late reply must not be read as the answer to a later request.
    remaining = limiter.check("other", Rate(3, 60)).remaining
    assert remaining == 2


def test_a_stopped_redis_is_unavailable_and_a_restarted_one_works(
    own_server: RedisServer,
) -> None:
    limiter = RedisLimiter(own_server.url, timeout=0.2)
    limiter.check("client", Rate(3, 60))
    port = own_server.port
    own_server.stop()
    with pytest.raises(LimiterUnavailable):
        limiter.check("client", Rate(3, 60))
    with pytest.raises(LimiterUnavailable):
        limiter.peek("client", Rate(3, 60))
    with pytest.raises(LimiterUnavailable):
        limiter.reset("client")
    with pytest.raises(LimiterUnavailable):
        limiter.stats()
    own_server.port = port
    own_server.process = own_server._spawn()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            assert limiter.check("client", Rate(3, 60)).remaining == 2  # fresh: no persistence
            break
        except LimiterUnavailable:
            time.sleep(0.05)
    else:
        pytest.fail("the limiter never recovered after redis came back")


def test_the_script_is_reloaded_after_redis_forgets_it(limiter: RedisLimiter, raw: object) -> None:
    rate = Rate(5, 60)
    assert limiter.check("client", rate).remaining == 4
    raw.script_flush()  # type: ignore[attr-defined]
    assert limiter.check("client", rate).remaining == 3


def test_an_error_reply_is_unavailable(limiter: RedisLimiter, raw: object, prefix: str) -> None:
    raw.rpush(prefix + "client", "not a bucket")  # type: ignore[attr-defined]
    with pytest.raises(LimiterUnavailable, match="WRONGTYPE"):
        limiter.check("client", Rate(5, 60))


def test_a_bucket_key_expires_when_its_bucket_is_full(
    limiter: RedisLimiter, raw: object, prefix: str
) -> None:
    limiter.check("slow", Rate(10, 60))
    assert 5_900 <= raw.pttl(prefix + "slow") <= 6_000  # type: ignore[attr-defined]
    limiter.check("fast", Rate(10, 1))
    time.sleep(0.15)
    assert not raw.exists(prefix + "fast")  # type: ignore[attr-defined]


def test_keys_live_under_the_prefix_only(limiter: RedisLimiter, raw: object, prefix: str) -> None:
    limiter.check("client", Rate(5, 60))
    assert raw.keys(prefix + "*") == [(prefix + "client").encode()]  # type: ignore[attr-defined]
    assert limiter.stats()["used"] == 1


def test_a_prefix_with_glob_characters_counts_its_own_keys_only(
    redis_server: RedisServer, prefix: str
) -> None:
    odd = RedisLimiter(redis_server.url, timeout=2.0, prefix=prefix + "[*]?:")
    plain = RedisLimiter(redis_server.url, timeout=2.0, prefix=prefix + "x:")
    odd.check("client", Rate(5, 60))
    plain.check("client", Rate(5, 60))
    assert odd.stats()["used"] == 1


def test_two_hosts_share_one_bucket(redis_server: RedisServer, prefix: str) -> None:
    hosts = [RedisLimiter(redis_server.url, timeout=2.0, prefix=prefix) for _ in range(2)]
    rate = Rate(6, 60)
    passed = [hosts[i % 2].check("client", rate).allowed for i in range(12)]
    assert passed == [True] * 6 + [False] * 6


def _hammer_redis(url: str, prefix: str, stop_at: int, out: Connection) -> None:
    """Check one key from two threads until ``stop_at``, and for half a second at least once
    ready (a busy machine may start a process after ``stop_at``: it still takes its part);
    send the admissions."""
    limiter = RedisLimiter(url, timeout=2.0, prefix=prefix)
    stop_at = max(stop_at, time.monotonic_ns() + 500_000_000)
    counts: list[int] = []

    def run() -> None:
        passed = 0
        while time.monotonic_ns() < stop_at:
            passed += limiter.check("hot", Rate(100, 3600)).allowed
        counts.append(passed)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.send(sum(counts))


def test_processes_hammering_through_redis_admit_exactly_the_burst(
    redis_server: RedisServer, prefix: str
) -> None:
    stop_at = time.monotonic_ns() + 1_000_000_000
    pipes, children = [], []
    for _ in range(4):
        reader, writer = FORK.Pipe(duplex=False)
        child = FORK.Process(target=_hammer_redis, args=(redis_server.url, prefix, stop_at, writer))
        child.start()
        writer.close()
        pipes.append(reader)
        children.append(child)
    totals = [reader.recv() for reader in pipes if reader.poll(30)]
    for child in children:
        child.join(10)
    assert len(totals) == 4
    assert sum(totals) == 100


def test_without_the_redis_package_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'gw\[redis\]'"):
        RedisLimiter("redis://127.0.0.1:6379/0")


def test_a_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RedisLimiter("redis://127.0.0.1:6379/0", timeout=0)


def test_without_redis_server_the_fixture_skips_or_fails_on_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.fixtures import redis_server as fixture

    monkeypatch.setattr(fixture, "redis_server_binary", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        fixture.require_redis_server()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        fixture.require_redis_server()
