"""GCRA buckets in Redis: the same contract as the shared table, exact across hosts.

One Lua script decides every bucket of a request atomically inside Redis (all take a token
or none does), on Redis's own clock (``TIME``), so hosts with skewed clocks still share one
bucket. A multi-key script needs its keys in one hash slot on a Redis Cluster: see
``gw.limits.redis_cluster``. The TAT lives in the key as integer
microseconds (Lua numbers are doubles: microseconds since 1970 stay exact, nanoseconds
would not), and the key expires (``PX``) when its bucket would be full again, so idle keys
cost no memory. The script is loaded once with ``SCRIPT LOAD`` and run with ``EVALSHA``,
reloaded if Redis answers ``NOSCRIPT`` (after a restart or ``SCRIPT FLUSH``).

Every Redis failure (refused, reset, timed out, error reply) becomes ``LimiterUnavailable``:
the host's adapter (``gw.host.redis``) connects and turns redis-py's errors into
``RedisUnavailable``, which ``limiter_failures`` turns into the limiter's. The ``redis`` package
is imported on first use, so the rest of gw works without the ``redis`` extra installed.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from gw.core.gcra import Decision, Rate, assess, describe, emission_interval
from gw.host import redis as host_redis
from gw.limits import LimiterUnavailable

US_PER_SECOND = 1_000_000
SCRIPT_VERSION = 2

# KEYS: the buckets of one request. ARGV[1]: cost (tokens), ARGV[2]: commit ("1" takes the
# tokens if every bucket has them, "0" only looks), then for each key i, ARGV[1 + 2i]: its
# emission interval (us) and ARGV[2 + 2i]: its capacity (tokens). A key listed twice is one
# bucket drawn from twice. Returns {1 if every bucket fits else 0, then for each key the
# microseconds its TAT was ahead of now before this request}. Nothing is written unless
# every bucket fits: all or nothing, inside one script, so atomically.
GCRA_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cost = tonumber(ARGV[1])
local planned = {}
local reply = {1}
for i, key in ipairs(KEYS) do
  local tat = planned[key] or tonumber(redis.call('GET', key))
  local ahead = 0
  if tat and tat > now then ahead = tat - now end
  local emission = tonumber(ARGV[1 + 2 * i])
  local after = ahead + cost * emission
  if after > tonumber(ARGV[2 + 2 * i]) * emission then
    reply[1] = 0
  else
    planned[key] = now + after
  end
  reply[i + 1] = ahead
end
if reply[1] == 1 and ARGV[2] == '1' then
  for key, tat in pairs(planned) do
    redis.call('SET', key, string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000))
  end
end
return reply
"""


class RedisLimiter:
    """GCRA buckets in Redis, shared by every process of every host that uses ``url``.

    Thread-safe and fork-safe (redis-py's pool reconnects in a forked child).

    Args:
        url: a redis-py URL (``redis://host:6379/0``, ``rediss://...``, ``unix://...``) or
            ``redis+sentinel://s1:26379,s2:26379/service/0`` (the primary Sentinel names;
            see ``gw.host.redis.parse_sentinel_url``).
        timeout: seconds allowed to connect and for each reply; past it, LimiterUnavailable.
        prefix: prepended to every key, so that gw's keys stay apart from others.
    """

    def __init__(self, url: str, timeout: float = 0.005, prefix: str = "gw:rl:") -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.url = url
        self.timeout = timeout
        self.prefix = prefix
        self._client = self._open(url, timeout)
        self._shas: dict[str, str] = {}
        self._load_lock = threading.Lock()

    def check_all(self, buckets: Sequence[tuple[str, Rate]], cost: int = 1) -> list[Decision]:
        """Take ``cost`` tokens from every bucket if each has them, else from none.

        One script run over every key of the request, so the decision is atomic.
        """
        if cost < 1:
            raise ValueError(f"cost must be at least 1, got {cost}")
        _, aheads = self._run(buckets, cost, commit=True)
        return decisions(buckets, aheads, cost)

    def check(self, key: str, rate: Rate, cost: int = 1) -> Decision:
        """Take ``cost`` tokens from ``key``'s bucket if they fit; raise LimiterUnavailable."""
        return self.check_all([(key, rate)], cost)[0]

    def peek(self, key: str, rate: Rate) -> Decision | None:
        """Describe ``key``'s bucket now without taking from it; None when it is full."""
        _, (ahead,) = self._run([(key, rate)], 1, commit=False)
        if not ahead:
            return None
        return describe(ahead, 0, emission_interval(rate, US_PER_SECOND), rate, US_PER_SECOND)

    def reset(self, key: str) -> bool:
        """Make ``key``'s bucket full again; return whether it held live state."""
        with limiter_failures("reset"):
            return bool(self._client.delete(self.prefix + key))

    def stats(self) -> dict[str, Any]:
        """Return what Redis can tell cheaply: its version and the live keys under the prefix."""
        with limiter_failures("stats"):
            info = self._client.info("server")
            pattern = host_redis.glob_escape(self.prefix) + "*"
            keys = sum(1 for _ in self._client.scan_iter(match=pattern))
        return {
            "backend": "redis",
            "layout_version": SCRIPT_VERSION,
            "prefix": self.prefix,
            "used": keys,
            "redis_version": info.get("redis_version"),
        }

    def close(self) -> None:
        """Close every pooled connection."""
        self._client.close()

    def _run(
        self, buckets: Sequence[tuple[str, Rate]], cost: int, commit: bool
    ) -> tuple[bool, list[int]]:
        """Run the script on ``buckets``; return whether all fit, and how far (us) each
        bucket's TAT was ahead of Redis's now."""
        args: list[int] = [cost, 1 if commit else 0]
        for _, rate in buckets:
            args += (emission_interval(rate, US_PER_SECOND), rate.capacity)
        reply = self._eval(GCRA_SCRIPT, [key for key, _ in buckets], args)
        return reply[0] == 1, [int(ahead) for ahead in reply[1:]]

    def _eval(self, script: str, keys: Sequence[str], args: Sequence[int]) -> Any:
        """Run ``script`` on the prefixed ``keys`` by its digest, loading it when needed."""
        names = [self.prefix + key for key in keys]
        with limiter_failures("check"):
            sha = self._shas.get(script) or self._load(script)
            try:
                return self._client.evalsha(sha, len(names), *names, *args)
            except Exception as ex:
                if not host_redis.script_missing(ex):
                    raise
                return self._client.evalsha(self._load(script), len(names), *names, *args)

    def _load(self, script: str) -> str:
        """Load ``script`` into Redis (again) and remember its digest."""
        with self._load_lock:
            self._shas[script] = str(self._client.script_load(script))
            return self._shas[script]

    @staticmethod
    def _open(url: str, timeout: float) -> Any:
        """Return the client for ``url`` (a cluster-aware one in ``RedisClusterLimiter``)."""
        return host_redis.connect(url, timeout)


def decisions(
    buckets: Sequence[tuple[str, Rate]], aheads: Sequence[int], cost: int
) -> list[Decision]:
    """Turn the script's answer (how far each TAT was ahead of now, us) into decisions."""
    return [
        assess(ahead or None, 0, emission_interval(rate, US_PER_SECOND), rate, cost, US_PER_SECOND)[
            0
        ]
        for ahead, (_, rate) in zip(aheads, buckets, strict=True)
    ]


class limiter_failures:
    """Turn any Redis failure inside a ``with`` block into LimiterUnavailable.

    Both a redis-py or socket error raised in the block and the adapter's
    ``RedisUnavailable`` become ``LimiterUnavailable`` with the adapter's message
    (``redis <operation> failed: ...``).
    """

    def __init__(self, operation: str) -> None:
        self._operation = operation

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, ex: BaseException | None, tb: Any) -> None:
        if ex is None:
            return
        failed = ex if isinstance(ex, host_redis.RedisUnavailable) else None
        failed = failed or host_redis.failure(self._operation, ex)
        if failed is not None:
            raise LimiterUnavailable(str(failed)) from ex
