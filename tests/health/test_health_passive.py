"""Passive health: failures in a row eject a target, a cooldown passes, exactly one request
probes it, and the probe's outcome restores or ejects it again (for longer)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from gw.errors import UpstreamBadResponse, UpstreamTimeout, UpstreamUnavailable
from gw.health import NoHealthyTarget
from gw.health.balancer import Balancer
from gw.health.choice import CANCELLED, CONNECT, RESET, STATUS, TIMEOUT, PassivePolicy, kind_of
from gw.health.snapshot import snapshot
from gw.health.state import create
from gw.health.table import HealthTable
from tests.health.helpers import URLS, FakeClock

Build = Callable[..., Balancer]
POLICY = PassivePolicy(consecutive_failures=3, cooldown=10, max_cooldown=35, probe_timeout=5)


def fail_target(b: Balancer, index: int, times: int, kind: str = CONNECT) -> None:
    """Send requests until ``times`` of them went to target ``index`` and failed there."""
    failed = 0
    while failed < times:
        choice = b.pick()
        if choice.target_index == index:
            choice.done(False, kind)
            failed += 1
        else:
            choice.done(True)


def states(path: str, clock: FakeClock) -> dict[str, str]:
    return {e["target"]: e["state"] for e in snapshot(path, clock=clock) if e["kind"] == "target"}


def picks(b: Balancer, count: int) -> set[int]:
    seen = set()
    for _ in range(count):
        choice = b.pick()
        seen.add(choice.target_index)
        choice.done(True)
    return seen


def test_consecutive_failures_eject_a_target(
    balancer: Build, table_path: str, clock: FakeClock
) -> None:
    b = balancer(passive=POLICY)
    fail_target(b, 1, 2)
    assert picks(b, 6) == {0, 1, 2}  # two failures: still in service
    fail_target(b, 1, 3)
    assert states(table_path, clock)[URLS[1]] == "ejected"
    assert picks(b, 30) == {0, 2}


def test_a_success_in_between_resets_the_count(balancer: Build) -> None:
    b = balancer(passive=POLICY)
    for _ in range(4):
        fail_target(b, 1, 2)
        fail_target(b, 1, 0)
        choice = b.pick()
        while choice.target_index != 1:
            choice.done(True)
            choice = b.pick()
        choice.done(True)  # a success on target 1
    assert picks(b, 6) == {0, 1, 2}


@pytest.mark.parametrize("kind", [CONNECT, RESET, TIMEOUT, STATUS])
def test_every_failure_kind_counts(
    balancer: Build, table_path: str, clock: FakeClock, kind: str
) -> None:
    b = balancer(passive=POLICY)
    fail_target(b, 0, 3, kind)
    assert states(table_path, clock)[URLS[0]] == "ejected"


def test_neutral_results_never_eject(balancer: Build, table_path: str, clock: FakeClock) -> None:
    """A client that went away, or an answer that is not a failure status, says nothing."""
    b = balancer(passive=POLICY)
    fail_target(b, 0, 10, CANCELLED)
    for _ in range(10):
        b.pick().answered(404)
        b.pick().answered(500)  # not in failure_statuses by default
    assert set(states(table_path, clock).values()) == {"healthy"}


def test_failure_statuses_eject(balancer: Build, table_path: str, clock: FakeClock) -> None:
    b = balancer(passive=POLICY, urls=URLS[:1], weights=(1,))
    for _ in range(3):
        b.pick().answered(503)
    assert states(table_path, clock)[URLS[0]] == "ejected"


def test_an_answer_with_a_success_status_is_a_success(
    balancer: Build, table_path: str, clock: FakeClock
) -> None:
    """``answered`` with a status that is not a failure status resets the count and ends a
    probe as ``done(True)`` does; a second report of the same request changes nothing."""
    b = balancer(passive=POLICY, urls=URLS[:1], weights=(1,))
    for _ in range(3):
        b.pick().answered(503)
        b.pick().answered(503)
        b.pick().answered(200)
    assert states(table_path, clock)[URLS[0]] == "healthy"
    for _ in range(3):
        b.pick().answered(503)
    assert states(table_path, clock)[URLS[0]] == "ejected"
    clock.advance(10.1)
    probe = b.pick()
    assert probe.probe
    probe.answered(200)
    probe.answered(503)  # reported once only: ignored
    assert states(table_path, clock)[URLS[0]] == "healthy"


def test_gateway_errors_map_to_failure_kinds() -> None:
    assert kind_of(UpstreamTimeout("slow")) == TIMEOUT
    assert kind_of(UpstreamUnavailable("refused")) == CONNECT
    assert kind_of(UpstreamBadResponse("garbage")) == "bad_response"
    assert kind_of(ConnectionResetError()) == RESET
    assert kind_of(GeneratorExit()) == CANCELLED


def test_after_the_cooldown_exactly_one_request_probes(
    balancer: Build, table_path: str, clock: FakeClock
) -> None:
    b = balancer(passive=POLICY)
    fail_target(b, 1, 3)
    clock.advance(9.9)
    assert picks(b, 10) == {0, 2}
    clock.advance(0.2)
    probe = b.pick()
    assert (probe.target_index, probe.probe) == (1, True)
    assert states(table_path, clock)[URLS[1]] == "probing"
    others = [b.pick() for _ in range(20)]  # while the probe is in flight
    assert {c.target_index for c in others} == {0, 2}
    probe.done(True)
    assert states(table_path, clock)[URLS[1]] == "healthy"
    assert picks(b, 6) == {0, 1, 2}


def test_a_failed_probe_ejects_again_for_twice_as_long_up_to_the_maximum(
    balancer: Build, table_path: str, clock: FakeClock
) -> None:
    b = balancer(passive=POLICY, urls=URLS[:1], weights=(1,))
    fail_target(b, 0, 3)
    cooldowns = []
    for _ in range(3):
        waited = 0
        while True:
            try:
                probe = b.pick()
                break
            except NoHealthyTarget:
                clock.advance(1)
                waited += 1
        cooldowns.append(waited)
        probe.done(False, TIMEOUT)
    assert cooldowns == [10, 20, 35]


def test_a_target_that_stayed_healthy_starts_over_at_the_base_cooldown(
    balancer: Build, clock: FakeClock
) -> None:
    b = balancer(passive=POLICY, urls=URLS[:1], weights=(1,))
    fail_target(b, 0, 3)
    clock.advance(10)
    b.pick().done(True)  # probe restores
    clock.advance(36)  # longer than max_cooldown in service
    fail_target(b, 0, 3)
    clock.advance(9)
    with pytest.raises(NoHealthyTarget):
        b.pick()
    clock.advance(1)
    assert b.pick().probe


def test_a_probe_that_reports_nothing_is_given_up_after_its_timeout(
    balancer: Build, clock: FakeClock
) -> None:
    b = balancer(passive=POLICY, urls=URLS[:1], weights=(1,))
    fail_target(b, 0, 3)
    clock.advance(10)
    assert b.pick().probe  # its worker dies: never reported
    with pytest.raises(NoHealthyTarget):
        b.pick()
    clock.advance(5)
    assert b.pick().probe


def test_a_neutral_probe_lets_the_next_request_probe(balancer: Build, clock: FakeClock) -> None:
    b = balancer(passive=POLICY, urls=URLS[:1], weights=(1,))
    fail_target(b, 0, 3)
    clock.advance(10)
    b.pick().done(False, CANCELLED)
    assert b.pick().probe


def test_every_target_ejected_answers_503_at_once_with_retry_after(
    balancer: Build, clock: FakeClock
) -> None:
    b = balancer(passive=POLICY)
    for index in range(3):
        fail_target(b, index, 3)
        clock.advance(2)
    with pytest.raises(NoHealthyTarget) as caught:
        b.pick()
    error = caught.value
    assert error.status == 503
    assert error.to_dict("req-1") == {
        "error": "no_healthy_target",
        "message": "no healthy target for upstream orders",
        "request_id": "req-1",
    }
    assert error.headers == {"Retry-After": "4"}  # the first ejected (at 0 s) is back at 10 s


def test_passive_ejection_can_be_turned_off(
    balancer: Build, table_path: str, clock: FakeClock
) -> None:
    b = balancer(passive=PassivePolicy(consecutive_failures=0))
    fail_target(b, 0, 50)
    assert states(table_path, clock)[URLS[0]] == "healthy"


def test_the_snapshot_counts_requests_failures_and_ejections(
    balancer: Build, table: HealthTable, table_path: str, clock: FakeClock
) -> None:
    b = balancer(passive=POLICY, urls=URLS[:1], weights=(1,), balance="least_outstanding")
    held = b.pick()
    fail_target(b, 0, 3)
    (entry,) = [e for e in snapshot(table_path, clock=clock) if e.get("target") == URLS[0]]
    assert entry["failures"] == 3
    assert entry["times_ejected"] == 1 and entry["ejected_for"] == 10.0
    assert entry["outstanding"] == 1
    held.done(True)


def _lone_target_story(b: Balancer, clock: FakeClock) -> list[object]:
    """What each pick of a script gives: (target, probe) or the refusal's class."""
    said: list[object] = []

    def pick() -> object:
        try:
            choice = b.pick()
        except NoHealthyTarget as ex:
            said.append(type(ex).__name__)
            return None
        said.append((choice.target_index, choice.probe))
        return choice

    for ok in (True, False, True, False, False, False, True):  # 3 failures in a row eject
        choice = pick()
        if choice is not None:
            choice.done(ok, "ok" if ok else CONNECT)
    clock.advance(10)  # the cooldown: one probe, the others refused while it is out
    probe, other = pick(), pick()
    assert other is None and probe is not None
    probe.done(True)
    for _ in range(2):
        choice = pick()
        if choice is not None:
            choice.done(True)
    return said


def test_a_lone_target_is_chosen_as_the_general_path_chooses_it(tmp_path: Path) -> None:
    """One target takes ``pick``'s shorter path: the same choices, probe and refusals as the
    scan over every target gives, through an ejection and its probe."""
    stories = []
    for alone in (True, False):
        path = str(tmp_path / f"health-{alone}.table")
        create(path, [("orders", URLS[0])], targets=4, upstreams=2, rows=4, stripes=2)
        clock = FakeClock()
        with HealthTable.open(path, clock=clock) as table:
            b = Balancer("orders", [(URLS[0], 1)], passive=POLICY, table=lambda: table)
            assert b._alone
            b._alone = alone
            stories.append(_lone_target_story(b, clock))
    assert stories[0] == stories[1]
    assert stories[0][5:] == [
        (0, False),  # the third failure in a row: ejected after it
        "NoHealthyTarget",
        (0, True),  # the probe, once the cooldown passed
        "NoHealthyTarget",  # while the probe is out
        (0, False),
        (0, False),
    ]
