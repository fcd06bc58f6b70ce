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
    assert stats["backend"] in {"table", "redis", "local"}


def test_unavailability_is_a_runtime_error_callers_can_catch() -> None:
    assert issubclass(LimiterUnavailable, RuntimeError)
