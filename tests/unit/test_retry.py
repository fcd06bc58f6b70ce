"""The retry rules: what may be tried again, how long to wait, and the budget."""

from __future__ import annotations

from gw.retry import CONNECT_FAILURE, RESET, STATUS, TIMEOUT, RetryBudget, RetryPolicy

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
    from gw.retry import STALE

    policy = RetryPolicy(attempts=2, retry_on=frozenset())
    assert policy.may_retry(1, "GET", False, STALE)
    assert not policy.may_retry(2, "GET", False, STALE)  # attempts used up
    assert not policy.may_retry(1, "POST", False, STALE)  # might have run
    assert not policy.may_retry(1, "GET", True, STALE)  # a body cannot be sent twice
    assert not RetryPolicy(attempts=1).may_retry(1, "GET", False, STALE)
