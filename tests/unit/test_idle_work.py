"""Idle work (the waiting access lines, the metrics publish) runs once per turn of the event
loop, and only if the worker is still idle when the turn ends (``gw.edge.inflight``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from gw.core.exchange import Exchange
from gw.edge import inflight


@pytest.fixture
def turn() -> Iterator[list[Callable[[], None]]]:
    """A fake event loop: callbacks wait in a list until the test ends the turn."""
    callbacks: list[Callable[[], None]] = []
    inflight.defer_idle_work(callbacks.append)
    yield callbacks
    inflight._later = None
    inflight._idle_work_pending = False


def end_of_turn(callbacks: list[Callable[[], None]]) -> None:
    pending, callbacks[:] = list(callbacks), []
    for callback in pending:
        callback()


def test_without_an_event_loop_the_work_runs_at_once() -> None:
    done: list[int] = []
    inflight.when_idle(lambda: done.append(1))
    assert done == [1]


def test_many_idle_moments_in_one_turn_run_the_work_once(
    turn: list[Callable[[], None]],
) -> None:
    done: list[int] = []
    for _ in range(5):
        inflight.when_idle(lambda: done.append(1))
    assert done == [] and len(turn) == 1
    end_of_turn(turn)
    assert done == [1]
    inflight.when_idle(lambda: done.append(2))  # the next turn schedules again
    end_of_turn(turn)
    assert done == [1, 2]


def test_a_request_that_started_during_the_turn_defers_the_work(
    turn: list[Callable[[], None]],
) -> None:
    done: list[int] = []
    inflight.when_idle(lambda: done.append(1))
    busy = Exchange(request_id="req-next", method="GET", raw_target="/")
    inflight.started(busy)  # the next request woke up in the same turn
    end_of_turn(turn)
    assert done == []  # its own end will be the next idle moment
    inflight.finished(busy)
    inflight.when_idle(lambda: done.append(2))
    end_of_turn(turn)
    assert done == [2]
