"""Greenlets of one gevent worker share a stripe in turn, even while its holder waits.

The stripe's thread lock is a native one (``gw.host.locks._thread_locks``); a greenlet that
found it taken must poll it, never block the thread: the holder may be parked in a sleep,
waiting for another process's record lock, and only this thread can run it again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support.stripes import hold_stripe_until_told

# Run in a child: the test process itself is not patched by gevent.
GREENLETS = textwrap.dedent(
    """
    from gevent import monkey
    monkey.patch_all()
    import json, sys, time
    import gevent
    from gw.host.locks import LockUnavailable, StripeLocks

    locks = StripeLocks(sys.argv[1], 8, deadline=float(sys.argv[2]))
    events = []

    def take(name, hold):
        started = time.monotonic()
        try:
            locks.acquire(3)
        except LockUnavailable as ex:
            events.append([name, "refused", type(ex).__name__])
            return
        events.append([name, "took", round(time.monotonic() - started, 3)])
        gevent.sleep(hold)  # parked while holding the stripe
        locks.release(3)
        events.append([name, "released"])

    first = gevent.spawn(take, "first", 0.05)
    gevent.sleep(0.005)
    second = gevent.spawn(take, "second", 0)
    print("waiting", flush=True)
    gevent.joinall([first, second])
    print(json.dumps(events), flush=True)
    """
)


def start_greenlets(lock_file: Path, deadline: float) -> subprocess.Popen[str]:
    """Start a gevent child whose two greenlets take stripe 3 of ``lock_file`` in turn."""
    return subprocess.Popen(
        [sys.executable, "-c", GREENLETS, str(lock_file), str(deadline)],
        stdout=subprocess.PIPE,
        text=True,
    )


def events_of(child: subprocess.Popen[str]) -> list[list[object]]:
    """Wait for the child; return what each greenlet saw, in order."""
    out, _ = child.communicate(timeout=30)
    assert child.returncode == 0, out
    events: list[list[object]] = json.loads(out.splitlines()[-1])
    return events


# What each greenlet saw when the two took the stripe one after the other.
IN_TURN = [["first", "took"], ["first", "released"], ["second", "took"], ["second", "released"]]


def lock_file_at(tmp_path: Path) -> Path:
    path = tmp_path / "locks"
    path.write_bytes(b"\0" * 8)
    return path


def test_a_greenlet_waits_for_another_that_holds_the_stripe_while_parked(tmp_path: Path) -> None:
    events = events_of(start_greenlets(lock_file_at(tmp_path), deadline=1.0))
    assert [e[:2] for e in events] == IN_TURN
    # The second waited for the first's 50 ms of holding, not for its own 1 s deadline.
    assert 0.03 <= float(str(events[2][2])) < 0.5


def test_greenlets_queued_behind_another_process_get_the_stripe_when_it_lets_go(
    tmp_path: Path,
) -> None:
    """The first greenlet holds the thread lock while it polls the record lock another
    process holds; the second polls the thread lock; both get the stripe once it is free."""
    lock_file = lock_file_at(tmp_path)
    holder = hold_stripe_until_told(str(lock_file), 3)
    child = start_greenlets(lock_file, deadline=2.0)
    try:
        assert child.stdout is not None and child.stdout.readline() == "waiting\n"
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.stdout.readline() == "released\n"
        events = events_of(child)
    finally:
        holder.kill()
        holder.wait()
        if child.poll() is None:
            child.kill()
            child.wait()
    assert [e[:2] for e in events] == IN_TURN
