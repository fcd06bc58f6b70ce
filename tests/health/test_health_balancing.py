"""How requests spread over targets: round robin, weighted splits, least outstanding and
sticky hashing, skipping what is ejected."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable

import pytest

from gw.health.balancer import Balancer
from gw.health.choice import PassivePolicy, TargetChoice
from gw.health.layout import EJECTED_UNTIL
from gw.health.snapshot import snapshot
from gw.health.table import HealthTable
from tests.health.helpers import URLS, FakeClock

Build = Callable[..., Balancer]


def spread(
    balancer: Balancer, count: int, key: Callable[[int], str | None] = lambda i: None
) -> Counter[int]:
    """Pick ``count`` times, finishing each request at once; count picks per target."""
    seen: Counter[int] = Counter()
    for i in range(count):
        choice = balancer.pick(key(i))
        seen[choice.target_index] += 1
        choice.done(True)
    return seen


def eject(table: HealthTable, url: str, clock: FakeClock, seconds: float = 60) -> None:
    """Mark ``url`` ejected for ``seconds`` (what five failures in a row would do)."""
    slot = table.target("orders", url)
    with table.held(slot) as base:
        table.words[base + EJECTED_UNTIL] = clock() + int(seconds * 1e9)


def test_round_robin_takes_turns_over_every_target(balancer: Build) -> None:
    b = balancer()
    order = [b.pick().target_index for _ in range(9)]
    assert order == [0, 1, 2] * 3


@pytest.mark.parametrize("balance", ["weighted", "round_robin"])
def test_a_95_5_split_over_2000_requests_lands_within_one_percent(
    balancer: Build, balance: str
) -> None:
    b = balancer(weights=(95, 5), urls=URLS[:2], balance=balance)
    seen = spread(b, 2000)
    assert abs(seen[0] - 1900) <= 20
    assert abs(seen[1] - 100) <= 20


def test_a_weighted_split_interleaves_the_canary_instead_of_bursting_it(balancer: Build) -> None:
    """Smooth weighted round robin: the 5% target never gets two requests in a row."""
    b = balancer(weights=(95, 5), urls=URLS[:2], balance="weighted")
    order = [b.pick().target_index for _ in range(400)]
    canary = [i for i, t in enumerate(order) if t == 1]
    assert len(canary) == 20
    assert min(b - a for a, b in itertools.pairwise(canary)) >= 19


def test_a_zero_weight_target_is_drained(balancer: Build) -> None:
    b = balancer(weights=(1, 0, 1))
    assert set(spread(b, 50)) == {0, 2}


def test_ejected_targets_get_nothing_and_the_rest_share_the_load(
    balancer: Build, table: HealthTable, clock: FakeClock
) -> None:
    b = balancer(weights=(95, 5, 0), balance="weighted")
    b2 = balancer()
    eject(table, URLS[1], clock)
    assert spread(b, 100) == Counter({0: 100})
    assert spread(b2, 100) == Counter({0: 50, 2: 50})


def test_least_outstanding_sends_to_the_target_with_fewest_in_flight(
    balancer: Build, table: HealthTable
) -> None:
    b = balancer(balance="least_outstanding")
    held = [b.pick() for _ in range(6)]  # two in flight on each target
    for choice in held:
        if choice.target_index != 2:
            choice.done(True)  # targets 0 and 1 finish, 2 stays busy
    picks = [b.pick() for _ in range(4)]
    assert 2 not in {c.target_index for c in picks}
    assert Counter(c.target_index for c in picks) == Counter({0: 2, 1: 2})


def test_least_outstanding_counts_requests_of_every_balancer_sharing_the_table(
    balancer: Build,
) -> None:
    """Another worker's balancer (same table) makes target 0 busy: this one avoids it."""
    other, mine = balancer(balance="least_outstanding"), balancer(balance="least_outstanding")
    held = [other.pick() for _ in range(15)]
    busy: list[TargetChoice] = [c for c in held if c.target_index == 0]
    for choice in held:
        if choice.target_index != 0:
            choice.done(True)
    assert len(busy) == 5  # five requests stay in flight on target 0
    picks = Counter(mine.pick().target_index for _ in range(8))
    assert picks == Counter({1: 4, 2: 4})


def test_least_outstanding_honours_weights(balancer: Build) -> None:
    b = balancer(weights=(3, 1, 0), balance="least_outstanding")
    held = Counter(b.pick().target_index for _ in range(40))  # none finishes
    assert held == Counter({0: 30, 1: 10})


def test_a_hash_key_always_reaches_the_same_target(balancer: Build) -> None:
    b = balancer(balance="hash")
    for key in ("alice", "bob", "10.1.2.3", "tenant-42"):
        assert len({b.pick(key).target_index for _ in range(20)}) == 1


def test_hash_keys_spread_over_every_target(balancer: Build) -> None:
    b = balancer(balance="hash")
    seen = spread(b, 3000, key=lambda i: f"user-{i}")
    assert all(900 <= seen[t] <= 1100 for t in range(3)), seen


def test_hash_weights_shape_the_share_of_keys(balancer: Build) -> None:
    b = balancer(weights=(3, 1, 0), balance="hash")
    seen = spread(b, 4000, key=lambda i: f"user-{i}")
    assert 2850 <= seen[0] <= 3150 and seen[2] == 0, seen


def test_a_hash_split_of_90_10_stays_90_10_over_many_keys(balancer: Build) -> None:
    """A sticky canary split: each key keeps its side, and the sides keep their weights."""
    b = balancer(weights=(90, 10), urls=URLS[:2], balance="hash")
    first = [b.pick(f"uid-{i}").target_index for i in range(5000)]
    assert abs(first.count(1) / 5000 - 0.10) <= 0.015, first.count(1)
    assert [b.pick(f"uid-{i}").target_index for i in range(5000)] == first


def test_ejecting_a_target_moves_only_its_own_keys(
    balancer: Build, table: HealthTable, clock: FakeClock
) -> None:
    """Rendezvous hashing: keys on the surviving targets stay where they were."""
    b = balancer(balance="hash")
    keys = [f"session-{i}" for i in range(600)]
    before = {k: b.pick(k).target_index for k in keys}
    eject(table, URLS[1], clock)
    after = {k: b.pick(k).target_index for k in keys}
    assert all(after[k] == before[k] for k in keys if before[k] != 1)
    assert all(after[k] != 1 for k in keys)
    moved = [k for k in keys if before[k] == 1]
    assert 150 <= len(moved) <= 250
    assert {after[k] for k in moved} == {0, 2}  # spread over both survivors


def test_the_same_key_picks_the_same_target_in_another_process_layout(
    table: HealthTable,
) -> None:
    """Stickiness depends on the key and the target URLs, not on their order or the worker."""
    forward = Balancer("orders", [(u, 1) for u in URLS], balance="hash", table=lambda: table)
    backward = Balancer(
        "orders", [(u, 1) for u in reversed(URLS)], balance="hash", table=lambda: table
    )
    for i in range(100):
        key = f"k{i}"
        assert (
            forward.urls[forward.pick(key).target_index]
            == (backward.urls[backward.pick(key).target_index])
        )


def test_hash_mode_without_a_key_falls_back_to_round_robin(balancer: Build) -> None:
    b = balancer(balance="hash")
    assert [b.pick(None).target_index for _ in range(6)] == [0, 1, 2, 0, 1, 2]


def test_a_pick_counts_in_flight_until_done(balancer: Build, table: HealthTable) -> None:
    b = balancer(passive=PassivePolicy(), balance="least_outstanding")
    choices = [b.pick() for _ in range(6)]
    slots = [table.target("orders", url) for url in URLS]
    assert [table.words[s.base + 1] for s in slots] == [2, 2, 2]
    for choice in choices:
        choice.done(True)
        choice.done(True)  # a second report changes nothing
    assert [table.words[s.base + 1] for s in slots] == [0, 0, 0]


def test_invalid_balancers_are_refused(table: HealthTable) -> None:
    with pytest.raises(ValueError, match="balance"):
        Balancer("orders", [(URLS[0], 1)], balance="random", table=lambda: table)
    with pytest.raises(ValueError, match="weight"):
        Balancer("orders", [(URLS[0], 0)], table=lambda: table)


def test_a_retry_avoids_the_targets_that_already_failed_it(balancer: Build) -> None:
    b = balancer(balance="hash")
    first = b.pick("alice").target_index
    second = b.pick("alice", avoid={first}).target_index
    third = b.pick("alice", avoid={first, second}).target_index
    assert len({first, second, third}) == 3
    assert b.pick("alice", avoid={0, 1, 2}).target_index == first  # nothing else: no choice


def test_a_request_reported_twice_leaves_the_flight_once(
    balancer: Build, table_path: str, clock: FakeClock
) -> None:
    """``answered`` after ``answered`` or ``done`` does nothing: a second report would take a
    request out of the in-flight count twice."""
    b = balancer(balance="least_outstanding", urls=URLS[:1], weights=(1,))
    held = [b.pick() for _ in range(3)]
    for choice in held[:2]:
        choice.answered(200)
        choice.answered(200)
    held[1].done(True)
    rows = snapshot(table_path, clock=clock)
    flight = {e["target"]: e["outstanding"] for e in rows if e["kind"] == "target"}
    assert flight[URLS[0]] == 1
