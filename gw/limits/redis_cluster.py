"""GCRA buckets in a Redis Cluster: the Redis contract, with keys spread over the cluster.

Select it with ``rate_limiting.backend: redis+cluster://host:port`` (``rediss+cluster://``
for TLS); any node of the cluster will do, the client discovers the others.

Redis Cluster runs a script only on keys of one hash slot. The buckets of one request
belong to different entities (the client's address, the user, the API key), so their keys
hash to different slots, and a hash tag common to one request would split the same
entity's bucket across requests. The choice made here is what Envoy's and Kong's Redis
limiters do: every bucket key keeps its own slot, so the limiter load spreads over the
cluster like any other keyspace. A request is then decided like this:

- when all its keys share a slot (one limit, or keys with a common hash tag), one script
  decides all of them atomically, exactly as on a single Redis;
- otherwise, per slot in ascending slot order: take the tokens with the atomic script of
  that slot; after the first slot that refuses, only look at the rest; if any slot
  refused, give back the tokens taken from the others (a second script subtracts them
  from the TAT, which stays correct when other requests took tokens in between).

Trade-off, across slots only: between the take and the give-back (one round trip), other
requests see the refused request's tokens as taken, so under contention a request may be
refused that an exact decision would have admitted. The limiter never admits more than the
limit. If the give-back itself fails (a node unreachable), those tokens stay taken until
the bucket refills: again stricter, never laxer. Exactness across slots would need every
key in one slot (a hash tag in the key prefix, such as ``{gw-rl}:``, the ``prefix``
argument): correct, but then one node carries all the limiter traffic of every gateway,
which is what a cluster was meant to avoid; the config does not offer it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from gw.core.gcra import Decision, Rate, emission_interval
from gw.host import redis as host_redis
from gw.limits import LimiterUnavailable
from gw.limits.redis_backend import (
    SCRIPT_VERSION,
    US_PER_SECOND,
    RedisLimiter,
    decisions,
    limiter_failures,
)

SCHEMES = host_redis.CLUSTER_SCHEMES

# KEYS: buckets of one slot that a refused request took from. ARGV[1]: cost (tokens), then
# for each key i, ARGV[1 + i]: its emission interval (us). Moves each TAT back by what the
# request took; a bucket that is full again is deleted.
GIVE_BACK_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cost = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('GET', key))
  if tat then
    tat = tat - cost * tonumber(ARGV[1 + i])
    if tat > now then
      redis.call('SET', key, string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000))
    else
      redis.call('DEL', key)
    end
  end
end
return 1
"""


is_cluster_url = host_redis.is_cluster_url


class RedisClusterLimiter(RedisLimiter):
    """GCRA buckets in a Redis Cluster; see the module docstring for cross-slot requests."""

    def check_all(self, buckets: Sequence[tuple[str, Rate]], cost: int = 1) -> list[Decision]:
        """Take ``cost`` tokens from every bucket if each has them, else from none.

        Atomic when the keys share a slot; across slots, take then give back (stricter
        under contention, never laxer).
        """
        slots = self._slots(buckets)
        if len(slots) == 1:
            return super().check_all(buckets, cost)
        if cost < 1:
            raise ValueError(f"cost must be at least 1, got {cost}")
        aheads = [0] * len(buckets)
        taken: list[list[tuple[str, Rate]]] = []
        try:
            refused = self._take_by_slot(buckets, slots, cost, aheads, taken)
        except LimiterUnavailable:
            self._give_back(taken, cost)
            raise
        if refused:
            self._give_back(taken, cost)
        return decisions(buckets, aheads, cost)

    def stats(self) -> dict[str, Any]:
        """Return the live keys under the prefix, counted on every primary."""
        with limiter_failures("stats"):
            pattern = host_redis.glob_escape(self.prefix) + "*"
            keys = sum(1 for _ in self._client.scan_iter(match=pattern))
        return {
            "backend": "redis-cluster",
            "layout_version": SCRIPT_VERSION,
            "prefix": self.prefix,
            "used": keys,
        }

    def _take_by_slot(
        self,
        buckets: Sequence[tuple[str, Rate]],
        slots: dict[int, list[int]],
        cost: int,
        aheads: list[int],
        taken: list[list[tuple[str, Rate]]],
    ) -> bool:
        """Take slot by slot, only looking after a refusal; return whether any refused."""
        refused = False
        for slot in sorted(slots):
            indexes = slots[slot]
            part = [buckets[i] for i in indexes]
            fits, part_aheads = self._run(part, cost, commit=not refused)
            for i, ahead in zip(indexes, part_aheads, strict=True):
                aheads[i] = ahead
            if fits and not refused:
                taken.append(part)
            refused = refused or not fits
        return refused

    def _give_back(self, taken: list[list[tuple[str, Rate]]], cost: int) -> None:
        """Return the tokens a refused request took; on failure they stay taken."""
        for part in taken:
            emissions = [emission_interval(rate, US_PER_SECOND) for _, rate in part]
            # APPSEC: if this fails, the bucket stays stricter until it refills, never laxer.
            with contextlib.suppress(LimiterUnavailable):
                self._eval(GIVE_BACK_SCRIPT, [key for key, _ in part], [cost, *emissions])

    def _slots(self, buckets: Sequence[tuple[str, Rate]]) -> dict[int, list[int]]:
        """Group the buckets' indexes by the hash slot of their prefixed keys."""
        slots: dict[int, list[int]] = {}
        for i, (key, _) in enumerate(buckets):
            slot = host_redis.key_slot((self.prefix + key).encode())
            slots.setdefault(slot, []).append(i)
        return slots

    @staticmethod
    def _open(url: str, timeout: float) -> Any:
        """Connect to the cluster (this reads its slot map now); never retry."""
        with limiter_failures("connect"):
            return host_redis.connect(url, timeout)
