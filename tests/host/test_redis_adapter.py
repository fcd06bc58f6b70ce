"""The host's redis-py adapter: clients that fail fast, and failures that leave as
RedisUnavailable (features translate it), never as redis-py's own errors."""

from __future__ import annotations

import socket
import time

import pytest

from gw.host import redis as host_redis

pytest.importorskip("redis")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_refused_connection_is_redis_unavailable_at_once() -> None:
    client = host_redis.connect(f"redis://127.0.0.1:{closed_port()}/0", timeout=0.2)
    started = time.monotonic()
    failed = pytest.raises(host_redis.RedisUnavailable, match="redis get failed")
    with failed as caught, host_redis.translated("get"):
        client.get("k")
    assert time.monotonic() - started < 1.0  # no retries, no backoff
    assert isinstance(caught.value.__cause__, OSError | host_redis.import_redis().RedisError)
    client.close()


def test_a_cluster_nobody_answers_is_redis_unavailable() -> None:
    with pytest.raises(host_redis.RedisUnavailable, match="redis connect failed"):
        host_redis.connect_cluster(f"redis://127.0.0.1:{closed_port()}", timeout=0.2)


def test_sentinels_nobody_answers_are_redis_unavailable_at_once() -> None:
    url = f"redis+sentinel://127.0.0.1:{closed_port()},127.0.0.1:{closed_port()}/mymaster/0"
    client = host_redis.connect(url, timeout=0.2)
    started = time.monotonic()
    failed = pytest.raises(host_redis.RedisUnavailable, match="No master found")
    with failed, host_redis.translated("get"):
        client.get("k")
    assert time.monotonic() - started < 1.0  # each sentinel refused once, no retries
    client.close()


def test_only_redis_and_socket_errors_are_translated() -> None:
    module = host_redis.import_redis()
    assert host_redis.failure("x", module.exceptions.ResponseError("ERR")) is not None
    assert host_redis.failure("x", ConnectionResetError()) is not None
    assert host_redis.failure("x", ValueError("a bug")) is None
    with pytest.raises(ValueError), host_redis.translated("x"):
        raise ValueError("a bug stays a bug")
    assert host_redis.script_missing(module.exceptions.NoScriptError("NOSCRIPT"))
    assert not host_redis.script_missing(module.exceptions.ResponseError("ERR"))


@pytest.mark.parametrize(
    ("text", "escaped"),
    [("gw:rl:", "gw:rl:"), ("a*b?c[d]e\\f", "a\\*b\\?c\\[d\\]e\\\\f")],
)
def test_glob_characters_are_escaped(text: str, escaped: str) -> None:
    assert host_redis.glob_escape(text) == escaped


def test_cluster_slots_follow_hash_tags() -> None:
    assert host_redis.key_slot(b"{user1}:a") == host_redis.key_slot(b"{user1}:b")
    assert 0 <= host_redis.key_slot(b"gw:rl:x") < 16384
