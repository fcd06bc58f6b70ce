"""The rate-limiter contract, run against every backend (shared table, Redis, local dict).

What a client of the gateway notices: how many requests pass, when the next one may come,
and what the rate-limit headers say. Timing tests use sub-second periods.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pytest

from gw.limits import LimiterUnavailable, Rate

SLACK = 0.5  # seconds of wall time a slow machine may spend between two calls


def admitted(limiter: Any, key: str, rate: Rate, attempts: int) -> int:
    """Send ``attempts`` requests of cost 1 and return how many passed."""
    return sum(limiter.check(key, rate).allowed for _ in range(attempts))


@pytest.mark.parametrize(
    "rate", [Rate(10, 60), Rate(10, 60, burst=3), Rate(1, 60), Rate(5, 60, burst=8)]
)
def test_a_fresh_key_gets_exactly_burst_admissions_then_a_denial(limiter: Any, rate: Rate) -> None:
    assert admitted(limiter, "client", rate, rate.capacity) == rate.capacity
    denied = limiter.check("client", rate)
    assert not denied.allowed
    assert admitted(limiter, "client", rate, 5) == 0


def test_an_admission_reports_remaining_and_reset(limiter: Any) -> None:
    rate = Rate(10, 60)  # one token every 6 s
    for _ in range(2):
        limiter.check("client", rate)
    third = limiter.check("client", rate)
    assert third.allowed
    assert third.limit == 10
    assert third.remaining == 7
    assert third.retry_after == 0
    assert 18 - SLACK < third.reset_after <= 18


def test_a_denial_reports_when_to_retry(limiter: Any) -> None:
    rate = Rate(10, 60)
    admitted(limiter, "client", rate, 10)
    denied = limiter.check("client", rate)
    assert not denied.allowed
    assert denied.limit == 10
    assert denied.remaining == 0
    assert 6 - SLACK < denied.retry_after <= 6
    assert 60 - SLACK < denied.reset_after <= 60


def test_the_bucket_refills_one_request_per_interval(limiter: Any) -> None:
    rate = Rate(2, 0.4)  # a token every 200 ms
    assert admitted(limiter, "client", rate, 3) == 2
    denied = limiter.check("client", rate)
    assert 0 < denied.retry_after <= 0.2
    time.sleep(denied.retry_after + 0.02)
    assert limiter.check("client", rate).allowed
    assert not limiter.check("client", rate).allowed


def test_after_reset_after_the_whole_burst_is_back(limiter: Any) -> None:
    rate = Rate(4, 0.4)  # a token every 100 ms
    admitted(limiter, "client", rate, 4)
    last = limiter.check("client", rate)
    assert not last.allowed
    time.sleep(last.reset_after + 0.02)
    assert admitted(limiter, "client", rate, 6) == 4


def test_keys_are_independent(limiter: Any) -> None:
    rate = Rate(3, 60)
    assert admitted(limiter, "alice", rate, 5) == 3
    assert admitted(limiter, "bob", rate, 5) == 3
    assert limiter.check("carol", rate).remaining == 2


def test_keys_that_differ_only_in_case_or_unicode_are_distinct(limiter: Any) -> None:
    rate = Rate(1, 60)
    for key in ["user-1", "USER-1", "user-1 ", "usér-1", "10.0.0.1", "::1"]:
        assert limiter.check(key, rate).allowed, key


def test_a_costly_request_takes_several_tokens(limiter: Any) -> None:
    rate = Rate(10, 60)
    first = limiter.check("client", rate, cost=4)
    assert first.allowed and first.remaining == 6
    too_much = limiter.check("client", rate, cost=7)
    assert not too_much.allowed
    assert too_much.remaining == 6
    assert 6 - SLACK < too_much.retry_after <= 6
    rest = limiter.check("client", rate, cost=6)
    assert rest.allowed and rest.remaining == 0


def test_a_cost_above_the_burst_never_passes(limiter: Any) -> None:
    rate = Rate(10, 60, burst=5)
    denied = limiter.check("client", rate, cost=6)
    assert not denied.allowed
    assert denied.retry_after == math.inf
    assert limiter.check("client", rate, cost=5).allowed


def test_a_cost_below_one_is_refused(limiter: Any) -> None:
    with pytest.raises(ValueError):
        limiter.check("client", Rate(10, 60), cost=0)


def test_peek_describes_a_bucket_without_taking_from_it(limiter: Any) -> None:
    rate = Rate(10, 60)
    assert limiter.peek("client", rate) is None
    admitted(limiter, "client", rate, 3)
    for _ in range(5):
        seen = limiter.peek("client", rate)
        assert seen is not None
        assert seen.allowed and seen.remaining == 7
        assert 18 - SLACK < seen.reset_after <= 18
    assert admitted(limiter, "client", rate, 10) == 7


def test_peek_on_an_empty_bucket_says_when_the_next_request_passes(limiter: Any) -> None:
    rate = Rate(10, 60)
    admitted(limiter, "client", rate, 10)
    seen = limiter.peek("client", rate)
    assert seen is not None
    assert not seen.allowed and seen.remaining == 0
    assert 6 - SLACK < seen.retry_after <= 6


def test_reset_gives_back_the_whole_burst(limiter: Any) -> None:
    rate = Rate(3, 60)
    admitted(limiter, "client", rate, 3)
    assert limiter.reset("client") is True
    assert limiter.peek("client", rate) is None
    assert admitted(limiter, "client", rate, 5) == 3


def test_reset_of_an_unknown_key_reports_nothing_to_reset(limiter: Any) -> None:
    assert limiter.reset("nobody") is False


def test_stats_count_live_buckets(limiter: Any) -> None:
    rate = Rate(3, 60)
    for key in ["a", "b", "c"]:
        limiter.check(key, rate)
    stats = limiter.stats()
    assert stats["used"] == 3
    assert stats["backend"] in {"table", "redis", "redis-cluster", "local"}


def test_unavailability_is_a_runtime_error_callers_can_catch() -> None:
    assert issubclass(LimiterUnavailable, RuntimeError)


# -- several buckets decided together (one request under several limits) -----------------

PER_IP = Rate(5, 60)
PER_USER = Rate(1, 60)


def test_a_request_refused_by_one_bucket_takes_from_none(limiter: Any) -> None:
    """Alice's refusals by her own 1/min leave the shared per-IP 5/min untouched."""
    first = limiter.check_all([("ip", PER_IP), ("alice", PER_USER)])
    assert [d.allowed for d in first] == [True, True]
    for _ in range(4):
        refused = limiter.check_all([("ip", PER_IP), ("alice", PER_USER)])
        assert [d.allowed for d in refused] == [True, False]
        assert 60 - SLACK < refused[1].retry_after <= 60
    seen = limiter.peek("ip", PER_IP)
    assert seen is not None and seen.remaining == 4
    for user in ["bob", "carol", "dave", "erin"]:
        assert all(d.allowed for d in limiter.check_all([("ip", PER_IP), (user, PER_USER)]))
    last = limiter.check_all([("ip", PER_IP), ("frank", PER_USER)])
    assert [d.allowed for d in last] == [False, True]
    assert limiter.peek("frank", PER_USER) is None  # frank's refused request took nothing


def test_an_admitted_request_takes_one_token_from_each_bucket(limiter: Any) -> None:
    decisions = limiter.check_all([("a", Rate(3, 60)), ("b", Rate(10, 60)), ("c", Rate(2, 60))])
    assert [d.allowed for d in decisions] == [True, True, True]
    assert [d.remaining for d in decisions] == [2, 9, 1]
    assert limiter.check("b", Rate(10, 60)).remaining == 8


def test_the_order_of_the_buckets_never_changes_the_outcome(limiter: Any) -> None:
    """The same requests, with their buckets listed in opposite orders, pass and fail alike."""
    rates = {"ip": Rate(4, 60), "user": Rate(2, 60), "route": Rate(3, 60)}
    script = [("ip", "user"), ("ip", "route"), ("user", "route"), ("ip", "user", "route")] * 3
    outcomes: dict[str, list[bool]] = {}
    for run, flip in (("forward", False), ("backward", True)):
        outcomes[run] = []
        for names in script:
            ordered = list(reversed(names)) if flip else list(names)
            buckets = [(f"{run}:{name}", rates[name]) for name in ordered]
            outcomes[run].append(all(d.allowed for d in limiter.check_all(buckets)))
    assert outcomes["forward"] == outcomes["backward"]
    assert outcomes["forward"] == [True, True, True, False, False, True] + [False] * 6
    for name, rate in rates.items():
        forward = limiter.peek(f"forward:{name}", rate)
        backward = limiter.peek(f"backward:{name}", rate)
        assert forward is not None and backward is not None
        assert forward.remaining == backward.remaining


def test_a_bucket_listed_twice_is_drawn_from_twice(limiter: Any) -> None:
    rate = Rate(3, 60)
    assert [d.remaining for d in limiter.check_all([("k", rate), ("k", rate)])] == [2, 1]
    refused = limiter.check_all([("k", rate), ("k", rate)])
    assert [d.allowed for d in refused] == [True, False]
    assert limiter.check("k", rate).remaining == 0  # the refused pair took nothing


def test_a_cost_that_one_bucket_can_never_hold_takes_from_none(limiter: Any) -> None:
    decisions = limiter.check_all([("big", Rate(10, 60)), ("small", Rate(10, 60, burst=2))], 3)
    assert [d.allowed for d in decisions] == [True, False]
    assert decisions[1].retry_after == math.inf
    assert limiter.peek("big", Rate(10, 60)) is None


def test_one_bucket_through_check_all_is_check(limiter: Any) -> None:
    rate = Rate(2, 60)
    assert [limiter.check_all([("solo", rate)])[0].allowed for _ in range(3)] == [
        True,
        True,
        False,
    ]
    assert limiter.check("solo", rate).allowed is False
