"""The one redis-py adapter of gw: connecting, the lazy import, error translation, globbing.

Every client gw makes never retries and never waits past its timeout: a retry inside the
request path would multiply the deadline, and each feature decides what an unavailable
Redis means (the rate limiter applies its fail-open rule, the cache answers a miss).

Every redis-py or socket failure that passes through ``translated`` (or ``connect_cluster``)
becomes ``RedisUnavailable``; features translate that into their own errors, so no redis-py
exception leaves gw. The ``redis`` package is imported on first use (``import_redis``), so
the rest of gw works without the ``redis`` extra installed.

``connect`` is the one place that makes a client, whatever the URL names: one server
(``redis://``, ``rediss://``, ``unix://``), a Redis Cluster (``redis+cluster://``,
``rediss+cluster://``: redis-py's ``RedisCluster``) or the primary that Redis Sentinel names
(``redis+sentinel://``: redis-py's ``Sentinel.master_for``; the URL form is gw's own, see
``parse_sentinel_url``).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

if TYPE_CHECKING:
    import redis

_GLOB_CHARACTERS = "*?[]\\"
CLUSTER_SCHEMES = {"redis+cluster://": "redis://", "rediss+cluster://": "rediss://"}
SENTINEL_SCHEME = "redis+sentinel://"
SENTINEL_PORT = 26379
PRIMARY_RECHECK = 1.0  # seconds between a Sentinel client's "which is the primary?" checks
_SENTINEL_FORM = "redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]"


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


@dataclass(frozen=True)
class SentinelTarget:
    """Where a ``redis+sentinel://`` URL points: the sentinels to ask, and what to ask for.

    ``password`` (and ``username``) authenticate to the primary; ``sentinel_password`` to
    the sentinels (Redis's ``requirepass`` in sentinel.conf), when they need one.
    """

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    # APPSEC: the passwords stay out of repr(), so a log line or an error never shows them.
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)


def is_sentinel_url(url: str) -> bool:
    """Say whether ``url`` names a primary through Redis Sentinel (``redis+sentinel://``)."""
    return url.startswith(SENTINEL_SCHEME)


def is_cluster_url(url: str) -> bool:
    """Say whether ``url`` names a Redis Cluster (``redis+cluster://``, ``rediss+cluster://``)."""
    return url.startswith(tuple(CLUSTER_SCHEMES))


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Parse ``redis+sentinel://[[user]:password@]h1[:p1][,h2[:p2]...]/service[/db]``.

    redis-py has no URL for Sentinel; this form is gw's. A port defaults to 26379; ``db``
    to 0; an IPv6 host goes in brackets. The userinfo authenticates to the primary;
    ``?sentinel_password=...`` to the sentinels. Percent-escapes are decoded.

    Raises:
        ValueError: ``url`` is not of that form (the message says what is wrong).
    """
    if not is_sentinel_url(url):
        raise ValueError(f"a Sentinel URL starts with {SENTINEL_SCHEME!r}")
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":") if userinfo else ("", "", "")
    names = [unquote(name) for name in parts.path.split("/")[1:]]
    if len(names) not in (1, 2) or not names[0]:
        raise ValueError(f"name the Sentinel service: {_SENTINEL_FORM}")
    if len(names) == 2 and not names[1].isdigit():
        raise ValueError(f"the database after the service is a number: {_SENTINEL_FORM}")
    return SentinelTarget(
        sentinels=tuple(_sentinel_address(host) for host in hosts.split(",")),
        service=names[0],
        db=int(names[1]) if len(names) == 2 else 0,
        username=unquote(username) or None,
        password=unquote(password) or None,
        sentinel_password=_sentinel_options(parts.query),
    )


def check_url(url: str) -> None:
    """Raise ValueError if ``url`` is a Sentinel URL gw cannot parse (others: at connect)."""
    if is_sentinel_url(url):
        parse_sentinel_url(url)


def connect(url: str, timeout: float) -> Any:
    """Build a pooled client for ``url`` that never retries and never waits past ``timeout``.

    ``url`` names one server (a redis-py URL), a cluster (``redis+cluster://``: its slot
    map is read now) or a Sentinel-managed primary (``redis+sentinel://``). A server or a
    primary is connected on first use (redis-py's pool reconnects in a forked child).

    Raises:
        RedisUnavailable: a cluster none of whose named nodes answered.
    """
    if is_sentinel_url(url):
        return connect_sentinel(parse_sentinel_url(url), timeout)
    if is_cluster_url(url):
        scheme = next(s for s in CLUSTER_SCHEMES if url.startswith(s))
        return connect_cluster(CLUSTER_SCHEMES[scheme] + url[len(scheme) :], timeout)
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


def connect_sentinel(target: SentinelTarget, timeout: float) -> redis.Redis:
    """Build a client of the primary that ``target``'s sentinels name; never retry.

    A new connection asks the sentinels (in turn, each within ``timeout``) where the primary
    is, then connects to it within ``timeout``. Pooled connections would stay on the primary
    they found for as long as it accepts writes, and a primary that Sentinel replaced while
    it was still up (``SENTINEL FAILOVER``, a partition) accepts them until Sentinel gets
    round to demoting it (up to ~10 s): writes there are lost. So the pool asks the
    sentinels again every ``PRIMARY_RECHECK`` seconds and drops its connections to an
    address they no longer name (``_recheck_pool``).
    """
    import_redis()  # a clear message when the extra is missing
    from redis.backoff import NoBackoff
    from redis.retry import Retry
    from redis.sentinel import Sentinel

    sentinel = Sentinel(
        target.sentinels,
        sentinel_kwargs={
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0),
            "password": target.sentinel_password,
        },
    )
    client: redis.Redis = sentinel.master_for(
        target.service,
        connection_pool_class=_recheck_pool(),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
        db=target.db,
        username=target.username,
        password=target.password,
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


def _sentinel_address(text: str) -> tuple[str, int]:
    """Parse one ``host[:port]`` of a Sentinel URL (``[v6]:port`` for IPv6)."""
    host, port = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ValueError(f"bad sentinel address {text!r}: {_SENTINEL_FORM}")
        port = rest[1:]
    elif ":" in text:
        host, _, port = text.rpartition(":")
    if not host or (port and not (port.isdigit() and 0 < int(port) < 65536)):
        raise ValueError(f"bad sentinel address {text!r}: {_SENTINEL_FORM}")
    return host, int(port) if port else SENTINEL_PORT


def _sentinel_options(query: str) -> str | None:
    """Return ``sentinel_password`` from a Sentinel URL's query; refuse any other option."""
    options = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    unknown = sorted(set(options) - {"sentinel_password"})
    if unknown:
        raise ValueError(f"unknown Sentinel URL option {unknown[0]!r} (known: sentinel_password)")
    values = options.get("sentinel_password", [])
    if len(values) > 1:
        raise ValueError("sentinel_password is given twice")
    return values[0] if values and values[0] else None


def _recheck_pool() -> Any:
    """Return a ``SentinelConnectionPool`` that re-asks where the primary is each second."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from redis.sentinel import SentinelConnectionPool

    class RecheckedPool(SentinelConnectionPool):
        checked = 0.0

        def get_connection(self, *args: Any, **kwargs: Any) -> Any:
            now = time.monotonic()
            if now - self.checked >= PRIMARY_RECHECK:
                # PERF: one sentinel round trip per process per second, not per command.
                self.checked = now
                # No sentinel answered: keep using the primary already known.
                with contextlib.suppress(RedisConnectionError, RedisTimeoutError):
                    # This drops the idle connections to a former primary.
                    self.get_master_address()  # type: ignore[no-untyped-call]
            return super().get_connection(*args, **kwargs)

        def close(self) -> None:
            """Close the primary's connections and the sentinels' (the client owns both)."""
            try:
                super().close()
            finally:
                self.sentinel_manager.close()

    return RecheckedPool
