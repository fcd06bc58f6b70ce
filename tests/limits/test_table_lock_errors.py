"""The shared table answers the host's lock errors with the limiter's: a stripe whose holder
is stopped is ``StripeFrozen`` (callers refuse), a busy one past its deadline is
``LimiterUnavailable`` (callers apply their fail-open rule)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from gw.core.gcra import Rate
from gw.limits import LimiterUnavailable, StripeFrozen
from gw.limits.table import SharedTable
from tests.support.stripes import hold_stripe

RATE = Rate(10, 1.0)
SLOW = Rate(10, 60.0)


def test_a_stopped_holder_refuses_the_key_with_stripe_frozen(tmp_path: Path) -> None:
    path = str(tmp_path / "ratelimit.table")
    SharedTable.create(path, slots=64, stripes=8)
    with SharedTable.open(path, deadline=2.0) as table:
        stripe = table._place("client-a")[1]
        child = hold_stripe(path + ".lock", stripe)
        try:
            os.kill(child.pid, signal.SIGSTOP)
            time.sleep(0.2)
            with pytest.raises(StripeFrozen, match=f"rate-limit stripe {stripe} held by stopped"):
                table.check("client-a", RATE)
            with pytest.raises(StripeFrozen):
                table.check_all([("client-a", RATE), ("client-b", RATE)])
        finally:
            child.kill()
            child.wait()
        assert table.check("client-a", RATE).allowed  # the kernel dropped the dead holder's lock


def test_a_busy_holder_past_the_deadline_is_limiter_unavailable(tmp_path: Path) -> None:
    path = str(tmp_path / "ratelimit.table")
    SharedTable.create(path, slots=64, stripes=8)
    with SharedTable.open(path, deadline=0.05) as table:
        stripe = table._place("client-a")[1]
        child = hold_stripe(path + ".lock", stripe)
        try:
            for call in (lambda: table.check("client-a", RATE), lambda: table.reset("client-a")):
                with pytest.raises(LimiterUnavailable, match="rate-limit lock deadline") as caught:
                    call()
                assert not isinstance(caught.value, StripeFrozen)
        finally:
            child.kill()
            child.wait()


def test_peek_answers_a_key_with_no_live_state_without_the_stripe_lock(tmp_path: Path) -> None:
    """The failure throttle peeks on every request: an address that never failed must not
    wait for (or fail on) a stripe another process holds; live state is still read locked."""
    path = str(tmp_path / "ratelimit.table")
    # 10 a minute: the spent token is still live state after the 0.5 s lock deadline below.
    SharedTable.create(path, slots=64, stripes=1)  # one stripe: every key shares its lock
    with SharedTable.open(path, deadline=0.5) as table:
        table.check("failed-once", SLOW)
        child = hold_stripe(path + ".lock", 0)
        try:
            started = time.monotonic()
            assert table.peek("never-failed", SLOW) is None
            assert time.monotonic() - started < 0.25  # no lock wait (the deadline is 0.5 s)
            with pytest.raises(LimiterUnavailable, match="rate-limit lock deadline"):
                table.peek("failed-once", SLOW)
        finally:
            child.kill()
            child.wait()
        decision = table.peek("failed-once", SLOW)
        assert decision is not None and decision.remaining == SLOW.limit - 1
