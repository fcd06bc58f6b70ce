"""GCRA (the generic cell rate algorithm): a token bucket kept as one timestamp per key.

Pure module: integers in, integers out, no clock and no I/O, so both backends (the shared
mmap table and the Redis Lua script) and the tests agree on one definition.

The state of a bucket is its TAT, the "theoretical arrival time": the instant at which the
bucket would be full again. With an emission interval ``T = period / limit`` (the refill
time of one token) and a capacity of ``burst`` tokens, a request of ``cost`` tokens at
``now`` passes when ``max(TAT, now) + cost * T - burst * T <= now``, and then moves the TAT
to ``max(TAT, now) + cost * T``. A TAT at or before ``now`` is a full bucket, which is why
storage may forget (or reuse) any key whose TAT has passed.

Units are whatever integer unit the caller's clock ticks in (nanoseconds for the mmap
table, microseconds inside Redis); ``unit`` converts them to the float seconds a
``Decision`` reports.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

NS_PER_SECOND = 1_000_000_000

_Id = TypeVar("_Id", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Rate:
    """``limit`` requests per ``period`` seconds, with ``burst`` sent at once (default ``limit``).

    Immutable, so one instance is safely shared by every thread. The derived integers are
    computed once here rather than on every decision.
    """

    limit: int
    period: float
    burst: int | None = None
    capacity: int = field(init=False, repr=False, compare=False)
    emission_ns: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _require_positive_int("limit", self.limit)
        if self.burst is not None:
            _require_positive_int("burst", self.burst)
        if not (isinstance(self.period, int | float) and math.isfinite(self.period)):
            raise ValueError(f"period must be a finite number of seconds, got {self.period!r}")
        if self.period <= 0:
            raise ValueError(f"period must be positive, got {self.period!r}")
        object.__setattr__(self, "capacity", self.limit if self.burst is None else self.burst)
        object.__setattr__(self, "emission_ns", emission_interval(self, NS_PER_SECOND))


class Decision(NamedTuple):
    """The outcome of one rate-limit check.

    ``remaining``: whole requests (of cost 1) that could still pass right now, after this
    one. ``retry_after``: seconds until the next request could pass (0 when allowed;
    ``math.inf`` when the cost exceeds the burst and can never pass). ``reset_after``:
    seconds until the bucket is full again.
    """

    # PERF: a NamedTuple is built in C; a frozen dataclass pays one object.__setattr__ per
    # field on every decision.
    allowed: bool
    limit: int
    remaining: int
    retry_after: float
    reset_after: float


def emission_interval(rate: Rate, units_per_second: int) -> int:
    """Return the refill time of one token in clock units, rounded up.

    Rounding up makes the bucket refill never faster than configured: a backend may admit a
    hair less than the exact rate, never more.
    """
    period_units = round(rate.period * units_per_second)
    return max(1, -(-period_units // rate.limit))


def decide(
    tat_ns: int | None, now_ns: int, rate: Rate, cost: int = 1
) -> tuple[Decision, int | None]:
    """Decide a request of ``cost`` tokens at ``now_ns`` against a bucket whose TAT is ``tat_ns``.

    Args:
        tat_ns: the stored TAT in nanoseconds, or None for a key never seen (a full bucket).
        now_ns: the current time on the same clock.
        rate: the bucket's rate.
        cost: tokens this request takes (at least 1).

    Returns:
        The decision and the TAT to store, or None when the request is denied (nothing to
        store: a denial never changes the bucket).
    """
    return assess(tat_ns, now_ns, rate.emission_ns, rate, cost, NS_PER_SECOND)


def decide_all(
    buckets: Sequence[tuple[_Id, Rate]],
    tats: Mapping[_Id, int | None],
    now_ns: int,
    cost: int = 1,
) -> tuple[list[Decision], dict[_Id, int] | None]:
    """Decide one request against several buckets together: all of them take, or none does.

    Args:
        buckets: (bucket id, rate) pairs in the request's order. An id listed twice is one
            bucket that the request draws from twice (the second sees the first's take).
        tats: the stored TAT of each id (None or absent for a full bucket).
        now_ns: the current time, one reading for every bucket.
        cost: tokens the request takes from each bucket.

    Returns:
        Each bucket's decision, in order (an allowed one says the request would fit it), and
        the TATs to store, by id, when every bucket admits; None when any refuses, in which
        case nothing may be stored.
    """
    planned: dict[_Id, int] = {}
    decisions = []
    for ident, rate in buckets:
        tat = planned[ident] if ident in planned else tats.get(ident)
        decision, after = decide(tat, now_ns, rate, cost)
        decisions.append(decision)
        if after is not None:
            planned[ident] = after
    return decisions, planned if all(d.allowed for d in decisions) else None


def assess(
    tat: int | None, now: int, emission: int, rate: Rate, cost: int, units_per_second: int
) -> tuple[Decision, int | None]:
    """Decide like ``decide`` on a clock ticking ``units_per_second`` with interval ``emission``."""
    if cost < 1:
        raise ValueError(f"cost must be at least 1, got {cost}")
    ahead = tat - now if tat is not None and tat > now else 0
    capacity = rate.capacity * emission
    after = ahead + cost * emission
    if after <= capacity:
        decision = Decision(
            True, rate.limit, (capacity - after) // emission, 0.0, after / units_per_second
        )
        return decision, now + after
    return _denial(ahead, capacity, emission, rate, cost, units_per_second), None


def describe(
    tat: int | None, now: int, emission: int, rate: Rate, units_per_second: int
) -> Decision:
    """Describe a bucket without taking from it: what a request of cost 1 would meet now.

    ``remaining`` counts the whole requests that could pass now (none is taken), and
    ``allowed`` says whether the next one would.
    """
    ahead = tat - now if tat is not None and tat > now else 0
    return _untaken(ahead, rate.capacity * emission, emission, rate, 1, units_per_second)


def _denial(
    ahead: int, capacity: int, emission: int, rate: Rate, cost: int, units_per_second: int
) -> Decision:
    """Build the decision for a request that does not fit in the bucket now."""
    decision = _untaken(ahead, capacity, emission, rate, cost, units_per_second)
    if cost > rate.capacity:  # bigger than the bucket: waiting never helps
        return decision._replace(retry_after=math.inf)
    return decision


def _untaken(
    ahead: int, capacity: int, emission: int, rate: Rate, cost: int, units_per_second: int
) -> Decision:
    """Describe a bucket ``ahead`` units from full to a request of ``cost``, taking nothing."""
    wait = max(0, ahead + cost * emission - capacity)
    remaining = max(0, (capacity - ahead) // emission)  # < 0 only after a rate change
    return Decision(
        wait == 0, rate.limit, remaining, wait / units_per_second, ahead / units_per_second
    )


def _require_positive_int(name: str, value: object) -> None:
    """Raise ValueError unless ``value`` is an int of at least 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
