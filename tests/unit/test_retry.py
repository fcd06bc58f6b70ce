"""The retry rules: what may be tried again, how long to wait, and the budget."""

from __future__ import annotations

import tracemalloc

from gw.core.retry import CONNECT_FAILURE, RESET, STATUS, TIMEOUT, RetryBudget, RetryPolicy

ALL = frozenset({CONNECT_FAILURE, TIMEOUT, RESET, STATUS})


def test_connect_failure_is_retried_for_any_method_even_with_a_body() -> None:
    policy = RetryPolicy(attempts=3)
    assert policy.may_retry(1, "POST", True, CONNECT_FAILURE)
    assert policy.may_retry(2, "PATCH", True, CONNECT_FAILURE)
    assert not policy.may_retry(3, "GET", False, CONNECT_FAILURE)  # attempts used up


def test_other_failures_only_for_idempotent_requests_without_body() -> None:
    policy = RetryPolicy(attempts=3, retry_on=ALL)
    for kind in (TIMEOUT, RESET, STATUS):
        assert policy.may_retry(1, "GET", False, kind)
        assert policy.may_retry(1, "DELETE", False, kind)
        assert not policy.may_retry(1, "POST", False, kind)
        assert not policy.may_retry(1, "PUT", True, kind)


def test_kinds_not_listed_are_not_retried() -> None:
    assert not RetryPolicy(attempts=3).may_retry(1, "GET", False, TIMEOUT)


def test_delay_doubles_and_honours_short_retry_after_only() -> None:
    policy = RetryPolicy(backoff=0.1, max_retry_after=2)
    assert policy.delay(1) == 0.1 and policy.delay(2) == 0.2
    assert policy.delay(1, "1") == 1.0
    assert policy.delay(1, "120") is None
    assert policy.delay(1, "Wed, 21 Oct 2026 07:28:00 GMT") is None


def test_budget_allows_ratio_of_recent_requests_plus_a_floor() -> None:
    budget = RetryBudget(ratio=0.2, min_per_second=0.5, window=10)
    for i in range(100):
        budget.record_request(now=i * 0.01)
    spent = sum(budget.try_spend(now=1.0) for _ in range(100))
    assert spent == 25  # 0.2 x 100 requests + 0.5/s x 10 s


def test_budget_forgets_outside_its_window() -> None:
    budget = RetryBudget(ratio=0.0, min_per_second=0.1, window=10)
    assert budget.try_spend(now=0.0)
    assert not budget.try_spend(now=1.0)
    assert budget.try_spend(now=11.0)


def test_a_stale_connection_is_retried_as_one_of_the_attempts_only_when_safe() -> None:
    from gw.core.retry import STALE

    policy = RetryPolicy(attempts=2, retry_on=frozenset())
    assert policy.may_retry(1, "GET", False, STALE)
    assert not policy.may_retry(2, "GET", False, STALE)  # attempts used up
    assert not policy.may_retry(1, "POST", False, STALE)  # might have run
    assert not policy.may_retry(1, "GET", True, STALE)  # a body cannot be sent twice
    assert not RetryPolicy(attempts=1).may_retry(1, "GET", False, STALE)


def test_budget_memory_stays_flat_however_many_requests_it_sees() -> None:
    """The budget keeps per-second counters, not one entry per request (issue 13, point 1)."""
    budget = RetryBudget(ratio=0.2, min_per_second=3, window=10)
    budget.record_request(now=0.0)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(100_000):
            budget.record_request(now=i * 0.0001)  # 100,000 requests within 10 s
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 4096, f"{grown} bytes for 100,000 requests"


def test_budget_counts_requests_of_the_window_only() -> None:
    """Requests older than the window no longer add to the allowance."""
    budget = RetryBudget(ratio=0.5, min_per_second=0.0, window=10)
    for second in range(5):
        for _ in range(10):
            budget.record_request(now=second + 0.5)  # 10 requests in each of seconds 0..4
    assert _spend_all(budget, now=9.5) == 25  # 0.5 x 50
    assert _spend_all(budget, now=12.5) == 0  # seconds 0..2 left; 0.5 x 20 = 10, all spent
    assert _spend_all(budget, now=15.0) == 0  # every request of seconds 0..4 is forgotten


def test_budget_retries_of_the_window_only_are_charged() -> None:
    """Spent retries free up as they leave the window; the floor is min_per_second x window."""
    budget = RetryBudget(ratio=0.0, min_per_second=0.5, window=4)
    assert _spend_all(budget, now=0.0) == 2  # 0.5/s x 4 s
    assert _spend_all(budget, now=3.9) == 0
    assert _spend_all(budget, now=4.5) == 2  # second 0 has left the window


def test_budget_ring_survives_a_long_idle_gap_and_a_clock_going_back() -> None:
    budget = RetryBudget(ratio=1.0, min_per_second=0.0, window=3)
    budget.record_request(now=1.0)
    assert _spend_all(budget, now=1.5) == 1
    budget.record_request(now=10_000.0)  # far beyond the ring: everything older is gone
    assert _spend_all(budget, now=10_000.2) == 1
    budget.record_request(now=9_999.0)  # an injected clock stepping back counts as "now"
    assert _spend_all(budget, now=10_000.3) == 1


def _spend_all(budget: RetryBudget, now: float) -> int:
    spent = 0
    while spent < 1000 and budget.try_spend(now=now):
        spent += 1
    return spent


def test_by_default_a_reset_is_retried_for_idempotent_bodyless_requests_only() -> None:
    policy = RetryPolicy()
    assert policy.may_retry(1, "GET", False, RESET)
    assert not policy.may_retry(1, "GET", True, RESET)
    assert not policy.may_retry(1, "POST", False, RESET)
    assert not policy.may_retry(1, "GET", False, TIMEOUT)
    assert not policy.may_retry(1, "GET", False, STATUS)
    assert not policy.may_retry(2, "GET", False, RESET)  # two tries in all
