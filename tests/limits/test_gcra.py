"""GCRA math: boundaries, costs, rounding, and equivalence with an exact token bucket."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gw.core.gcra import NS_PER_SECOND, decide, describe, emission_interval
from gw.limits import Decision, Rate

S = NS_PER_SECOND
NOW = 10**18  # an arbitrary CLOCK_MONOTONIC reading


def take(rate: Rate, times: int, now: int = NOW, tat: int | None = None) -> int:
    """Admit ``times`` requests of cost 1 at ``now``; return the TAT (assert all passed)."""
    for _ in range(times):
        decision, tat = decide(tat, now, rate)
        assert decision.allowed
    assert tat is not None
    return tat


class TestRate:
    def test_burst_defaults_to_limit(self) -> None:
        assert Rate(10, 60).capacity == 10
        assert Rate(100, 1, burst=20).capacity == 20

    def test_emission_interval_is_period_over_limit(self) -> None:
        assert Rate(10, 60).emission_ns == 6 * S
        assert Rate(100, 1, burst=20).emission_ns == 10_000_000

    def test_emission_interval_rounds_up_so_refill_is_never_faster(self) -> None:
        assert Rate(3, 1).emission_ns == 333_333_334
        assert emission_interval(Rate(3, 1), 1_000_000) == 333_334

    def test_emission_interval_is_at_least_one_unit(self) -> None:
        assert emission_interval(Rate(10**7, 1), 1_000_000) == 1

    @pytest.mark.parametrize(
        "args",
        [
            (0, 1.0),
            (-1, 1.0),
            (1.5, 1.0),
            (True, 1.0),
            (1, 0),
            (1, -1.0),
            (1, math.inf),
            (1, math.nan),
            (1, "60"),
            (1, 1.0, 0),
            (1, 1.0, -3),
        ],
    )
    def test_invalid_rates_are_refused(self, args: tuple[object, ...]) -> None:
        with pytest.raises(ValueError):
            Rate(*args)  # type: ignore[arg-type]

    def test_rates_are_values(self) -> None:
        assert Rate(10, 60) == Rate(10, 60.0)
        assert hash(Rate(10, 60, 5)) == hash(Rate(10, 60, 5))


class TestFreshKey:
    def test_first_request_passes_with_burst_minus_one_remaining(self) -> None:
        decision, tat = decide(None, NOW, Rate(10, 60))
        assert decision == Decision(True, 10, 9, 0.0, 6.0)
        assert tat == NOW + 6 * S

    def test_a_past_tat_is_a_fresh_bucket(self) -> None:
        assert decide(NOW - 1, NOW, Rate(10, 60)) == decide(None, NOW, Rate(10, 60))
        assert decide(NOW, NOW, Rate(10, 60)) == decide(None, NOW, Rate(10, 60))

    @pytest.mark.parametrize("rate", [Rate(10, 60), Rate(100, 1, burst=20), Rate(1, 1)])
    def test_exactly_burst_pass_at_once_then_one_is_denied(self, rate: Rate) -> None:
        tat = take(rate, rate.capacity)
        decision, new_tat = decide(tat, NOW, rate)
        assert not decision.allowed
        assert new_tat is None
        assert decision.remaining == 0
        assert decision.retry_after == rate.emission_ns / S
        assert decision.reset_after == rate.capacity * rate.emission_ns / S

    def test_seed_003_default_lets_20_through_then_one_every_10_ms(self) -> None:
        rate = Rate(100, 1, burst=20)
        tat = take(rate, 20)
        assert not decide(tat, NOW, rate)[0].allowed
        assert decide(tat, NOW + 10_000_000 - 1, rate)[0].allowed is False
        assert decide(tat, NOW + 10_000_000, rate)[0].allowed is True

    def test_burst_larger_than_limit(self) -> None:
        rate = Rate(2, 1, burst=5)
        tat = take(rate, 5)
        assert not decide(tat, NOW, rate)[0].allowed


class TestBoundaries:
    def test_one_nanosecond_before_the_refill_is_denied_and_at_it_passes(self) -> None:
        rate = Rate(10, 60)
        tat = take(rate, 10)
        early, none = decide(tat, NOW + 6 * S - 1, rate)
        assert not early.allowed and none is None
        assert early.retry_after == pytest.approx(1e-9)
        ontime, new_tat = decide(tat, NOW + 6 * S, rate)
        assert ontime.allowed
        assert ontime.remaining == 0
        assert new_tat == tat + 6 * S

    def test_remaining_counts_whole_requests_only(self) -> None:
        rate = Rate(10, 60)
        tat = take(rate, 10)
        half = decide(tat, NOW + 9 * S, rate)[0]  # 1.5 tokens back
        assert half.allowed and half.remaining == 0
        later = decide(tat, NOW + 12 * S, rate)[0]  # 2 tokens back
        assert later.allowed and later.remaining == 1

    def test_retry_after_shrinks_as_time_passes(self) -> None:
        rate = Rate(10, 60)
        tat = take(rate, 10)
        assert decide(tat, NOW + 2 * S, rate)[0].retry_after == 4.0

    def test_reset_after_is_time_until_the_bucket_is_full(self) -> None:
        rate = Rate(10, 60)
        tat = take(rate, 4)
        assert decide(tat, NOW + 3 * S, rate)[0].reset_after == 4 * 6 + 6 - 3

    def test_a_full_bucket_refills_no_further(self) -> None:
        rate = Rate(10, 60)
        tat = take(rate, 10)
        tat = take(rate, 10, now=NOW + 3600 * S, tat=tat)
        assert not decide(tat, NOW + 3600 * S, rate)[0].allowed

    def test_a_denial_leaves_the_bucket_unchanged(self) -> None:
        rate = Rate(10, 60)
        tat = take(rate, 10)
        for _ in range(100):
            assert decide(tat, NOW, rate)[1] is None
        assert decide(tat, NOW + 6 * S, rate)[0].allowed


class TestCost:
    def test_cost_takes_that_many_tokens(self) -> None:
        rate = Rate(10, 60)
        decision, tat = decide(None, NOW, rate, cost=4)
        assert decision.remaining == 6
        assert decision.reset_after == 24.0
        assert tat == NOW + 24 * S

    def test_cost_equal_to_burst_passes_on_a_full_bucket_only(self) -> None:
        rate = Rate(10, 60)
        decision, tat = decide(None, NOW, rate, cost=10)
        assert decision.allowed and decision.remaining == 0
        denied = decide(tat, NOW + 6 * S, rate, cost=10)[0]
        assert not denied.allowed
        assert denied.retry_after == 54.0

    def test_a_costly_denial_reports_what_single_requests_could_still_do(self) -> None:
        rate = Rate(10, 60)
        tat = take(rate, 7)
        decision, none = decide(tat, NOW, rate, cost=4)
        assert not decision.allowed and none is None
        assert decision.remaining == 3
        assert decision.retry_after == 6.0

    @pytest.mark.parametrize("wait", [0, 60 * S, 10**6 * S])
    def test_cost_above_burst_never_passes(self, wait: int) -> None:
        decision, tat = decide(None, NOW + wait, Rate(10, 60), cost=11)
        assert not decision.allowed and tat is None
        assert decision.retry_after == math.inf
        assert decision.remaining == 10

    @pytest.mark.parametrize("cost", [0, -1])
    def test_cost_below_one_is_refused(self, cost: int) -> None:
        with pytest.raises(ValueError):
            decide(None, NOW, Rate(10, 60), cost=cost)


class TestDescribe:
    def test_describes_without_taking(self) -> None:
        rate = Rate(10, 60)
        tat = take(rate, 3)
        assert describe(tat, NOW, rate.emission_ns, rate, S) == Decision(True, 10, 7, 0.0, 18.0)

    def test_an_empty_bucket_says_when_the_next_request_passes(self) -> None:
        rate = Rate(10, 60)
        tat = take(rate, 10)
        assert describe(tat, NOW + S, rate.emission_ns, rate, S) == Decision(
            False, 10, 0, 5.0, 59.0
        )

    def test_after_a_rate_change_remaining_is_never_negative(self) -> None:
        tat = take(Rate(10, 60), 10)
        small = Rate(2, 60)
        assert describe(tat, NOW, small.emission_ns, small, S).remaining == 0
        assert decide(tat, NOW, small)[0].remaining == 0


steps = st.lists(st.tuples(st.integers(0, 5 * S), st.integers(1, 12)), min_size=1, max_size=60)
rates = st.builds(
    Rate,
    limit=st.integers(1, 50),
    period=st.sampled_from([0.001, 0.2, 1, 7.5, 60, 3600]),
    burst=st.none() | st.integers(1, 12),
)


@given(rate=rates, steps=steps)
def test_gcra_admits_exactly_what_an_exact_token_bucket_admits(
    rate: Rate, steps: list[tuple[int, int]]
) -> None:
    """For any request sequence, GCRA and a token bucket in exact fractions agree on every
    admission, on ``remaining`` and on ``retry_after``."""
    interval = rate.emission_ns
    tokens = Fraction(rate.capacity)
    now, tat = NOW, None
    for gap, cost in steps:
        now += gap
        tokens = min(Fraction(rate.capacity), tokens + Fraction(gap, interval))
        decision, new_tat = decide(tat, now, rate, cost)
        assert decision.allowed == (tokens >= cost)
        if decision.allowed:
            tokens -= cost
            tat = new_tat
            assert decision.remaining == math.floor(tokens)
        elif cost <= rate.capacity:
            assert decision.retry_after == pytest.approx(float((cost - tokens) * interval / S))


@given(rate=rates, steps=steps)
def test_no_window_ever_admits_more_than_burst_plus_refill(
    rate: Rate, steps: list[tuple[int, int]]
) -> None:
    """Between any two admissions, the tokens taken never exceed the burst plus what
    refilled in between: the bound the multi-process exactness tests rely on."""
    now, tat = NOW, None
    admitted: list[tuple[int, int]] = []
    for gap, cost in steps:
        now += gap
        decision, new_tat = decide(tat, now, rate, cost)
        if decision.allowed:
            tat = new_tat
            admitted.append((now, cost))
    for i, (start, _) in enumerate(admitted):
        taken = 0
        for end, cost in admitted[i:]:
            taken += cost
            assert taken <= rate.capacity + (end - start) // rate.emission_ns
