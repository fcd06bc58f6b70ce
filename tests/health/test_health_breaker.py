"""The circuit breaker of an upstream: it opens on a failure ratio over a rolling window,
fails fast while open, admits a bounded number of half-open trials, and closes on success."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gw.health import CircuitOpen
from gw.health.balancer import Balancer
from gw.health.breaker import BreakerPolicy
from gw.health.choice import CONNECT, PassivePolicy, TargetChoice
from gw.health.snapshot import snapshot
from gw.health.table import HealthTable
from tests.health.helpers import FakeClock

Build = Callable[..., Balancer]
BREAKER = BreakerPolicy(
    window=10, min_requests=20, failure_ratio=0.5, open_seconds=5, half_open_requests=2
)
NO_EJECTION = PassivePolicy(consecutive_failures=0)


def results(b: Balancer, ok: int, failed: int) -> None:
    for _ in range(ok):
        b.pick().done(True)
    for _ in range(failed):
        b.pick().done(False, CONNECT)


@pytest.fixture
def upstream(balancer: Build) -> Balancer:
    return balancer(passive=NO_EJECTION, breaker=BREAKER)


def test_the_circuit_opens_when_half_the_window_fails(
    upstream: Balancer, table: HealthTable
) -> None:
    results(upstream, ok=10, failed=9)
    assert upstream.breaker is not None and upstream.breaker.state(table) == "closed"
    results(upstream, ok=0, failed=1)  # 10 of 20
    assert table.breaker_state("orders") == "open"
    with pytest.raises(CircuitOpen) as caught:
        upstream.pick()
    assert caught.value.status == 503
    assert caught.value.to_dict()["error"] == "circuit_open"
    assert caught.value.headers == {"Retry-After": "5"}


def test_too_few_requests_never_open_the_circuit(upstream: Balancer, table: HealthTable) -> None:
    results(upstream, ok=0, failed=19)
    assert table.breaker_state("orders") == "closed"


def test_failures_older_than_the_window_do_not_count(
    upstream: Balancer, table: HealthTable, clock: FakeClock
) -> None:
    results(upstream, ok=0, failed=15)
    clock.advance(11)
    results(upstream, ok=10, failed=9)
    assert table.breaker_state("orders") == "closed"


def test_an_open_circuit_half_opens_then_admits_only_the_trials(
    upstream: Balancer, table: HealthTable, clock: FakeClock
) -> None:
    results(upstream, ok=0, failed=20)
    clock.advance(5)
    assert table.breaker_state("orders") == "half_open"
    trials = [upstream.pick(), upstream.pick()]
    assert all(t.trial for t in trials)
    with pytest.raises(CircuitOpen):
        upstream.pick()
    for trial in trials:
        trial.done(True)
    assert table.breaker_state("orders") == "closed"
    assert not upstream.pick().trial


def test_a_failed_trial_reopens_the_circuit(
    upstream: Balancer, table: HealthTable, clock: FakeClock
) -> None:
    results(upstream, ok=0, failed=20)
    clock.advance(5)
    first, second = upstream.pick(), upstream.pick()
    first.done(True)
    second.done(False, CONNECT)
    assert table.breaker_state("orders") == "open"
    clock.advance(4.9)
    with pytest.raises(CircuitOpen):
        upstream.pick()


def test_trials_lost_with_their_worker_are_handed_out_again(
    upstream: Balancer, table: HealthTable, clock: FakeClock
) -> None:
    results(upstream, ok=0, failed=20)
    clock.advance(5)
    lost = [upstream.pick(), upstream.pick()]  # never reported
    with pytest.raises(CircuitOpen):
        upstream.pick()
    clock.advance(5)
    retried: list[TargetChoice] = [upstream.pick(), upstream.pick()]
    assert all(t.trial for t in retried) and len(lost) == 2
    for trial in retried:
        trial.done(True)
    assert table.breaker_state("orders") == "closed"


def test_a_cancelled_trial_is_given_back(
    upstream: Balancer, table: HealthTable, clock: FakeClock
) -> None:
    results(upstream, ok=0, failed=20)
    clock.advance(5)
    upstream.pick().done(False, "cancelled")
    trials = [upstream.pick(), upstream.pick()]
    assert all(t.trial for t in trials)


def test_the_breaker_state_is_visible_to_an_operator_process(
    upstream: Balancer, table_path: str, clock: FakeClock
) -> None:
    results(upstream, ok=3, failed=17)
    (entry,) = [e for e in snapshot(table_path, clock=clock) if e["kind"] == "upstream"]
    assert entry == {
        "kind": "upstream",
        "upstream": "orders",
        "breaker": "open",
        "open_for": 5.0,
        "window_requests": 0,  # the window starts over when the circuit opens
        "window_failures": 0,
        "trips": 1,
    }
    with HealthTable.open(table_path, attach=False, clock=clock) as reader:
        assert reader.breaker_state("orders") == "open"
        assert reader.breaker_state("unknown") == "closed"


def test_the_window_counts_are_visible_while_closed(
    upstream: Balancer, table_path: str, clock: FakeClock
) -> None:
    results(upstream, ok=7, failed=3)
    (entry,) = [e for e in snapshot(table_path, clock=clock) if e["kind"] == "upstream"]
    assert (entry["breaker"], entry["window_requests"], entry["window_failures"]) == (
        "closed",
        10,
        3,
    )


def test_policies_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError):
        BreakerPolicy(failure_ratio=0)
    with pytest.raises(ValueError):
        BreakerPolicy(half_open_requests=0)
