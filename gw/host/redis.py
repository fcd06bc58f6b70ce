"""The one redis-py adapter of gw: connecting, the lazy import, error translation, globbing.

Every client gw makes never retries and never waits past its timeout: a retry inside the
request path would multiply the deadline, and each feature decides what an unavailable
Redis means (the rate limiter applies its fail-open rule, the cache answers a miss).

Every redis-py or socket failure that passes through ``translated`` (or ``connect_cluster``)
becomes ``RedisUnavailable``; features translate that into their own errors, so no redis-py
exception leaves gw. The ``redis`` package is imported on first use (``import_redis``), so
the rest of gw works without the ``redis`` extra installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis

_GLOB_CHARACTERS = "*?[]\\"


class RedisUnavailable(RuntimeError):
    """Redis did not answer: refused, reset, timed out, or an error reply.

    The message names the operation (``redis check failed: ...``); the redis-py or socket
    error is its ``__cause__``.
    """


def import_redis() -> Any:
    """Import redis-py on first use, with a clear message when the extra is missing."""
    try:
        import redis
    except ModuleNotFoundError as ex:
        raise ModuleNotFoundError(
            "gw's Redis backends (rate limiting, cache) need the 'redis' package: "
            "pip install 'gw[redis]'"
        ) from ex
    return redis


def connect(url: str, timeout: float) -> redis.Redis:
    """Build a pooled client for ``url`` that never retries and never waits past ``timeout``.

    It connects on first use (redis-py's pool reconnects in a forked child).
    """
    module = import_redis()
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client: redis.Redis = module.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )
    return client


def connect_cluster(url: str, timeout: float) -> Any:
    """Connect to the Redis Cluster one of whose nodes ``url`` names; never retry.

    This reads the cluster's slot map now.

    Raises:
        RedisUnavailable: no node answered.
    """
    import_redis()  # a clear message when the extra is missing
    from redis.backoff import NoBackoff
    from redis.cluster import RedisCluster
    from redis.retry import Retry

    with translated("connect"):
        return RedisCluster.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )


def key_slot(key: bytes) -> int:
    """Return the Redis Cluster hash slot of ``key`` (its hash tag, if it has one)."""
    from redis.crc import key_slot as slot_of

    return int(slot_of(key))


def failure(operation: str, ex: BaseException) -> RedisUnavailable | None:
    """Return the error to raise for ``ex`` from ``operation``; None if it is not Redis's.

    Redis's are redis-py's errors (``RedisError``, ``RedisClusterException``) and ``OSError``
    (a socket refused, reset or timed out).
    """
    module = import_redis()
    failures = (module.RedisError, module.exceptions.RedisClusterException, OSError)
    if isinstance(ex, failures):
        return RedisUnavailable(f"redis {operation} failed: {ex}")
    return None


def script_missing(ex: BaseException) -> bool:
    """Whether ``ex`` is Redis's answer to ``EVALSHA`` of a script it does not hold."""
    return isinstance(ex, import_redis().exceptions.NoScriptError)


class translated:
    """Turn any redis-py or socket failure inside a ``with`` block into RedisUnavailable."""

    def __init__(self, operation: str) -> None:
        self._operation = operation

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, ex: BaseException | None, tb: Any) -> None:
        # PERF: a class, not @contextmanager: no generator per Redis call.
        if ex is not None:
            failed = failure(self._operation, ex)
            if failed is not None:
                raise failed from ex


def glob_escape(text: str) -> str:
    """Escape the glob characters Redis's ``MATCH`` understands (``SCAN`` patterns)."""
    return "".join("\\" + char if char in _GLOB_CHARACTERS else char for char in text)
