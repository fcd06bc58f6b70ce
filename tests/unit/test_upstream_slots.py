"""The max_connections cap of gw.upstream.pool, under real threads: never more slots in use
than the cap, every waiter gets a slot given back in time, and a wait ends at its timeout."""

from __future__ import annotations

import threading
import time

from gw.upstream.pool import _Slots

CAP = 3
THREADS = 12
ROUNDS = 300


def test_threads_never_hold_more_slots_than_the_cap_and_no_waiter_misses_a_given_slot() -> None:
    slots = _Slots(CAP)
    lock = threading.Lock()
    held = [0]
    most = [0]
    missed = [0]

    def work() -> None:
        for _ in range(ROUNDS):
            if not slots.take(10.0):  # generous: a missed wake-up would show as a timeout
                missed[0] += 1
                continue
            with lock:
                held[0] += 1
                most[0] = max(most[0], held[0])
            time.sleep(0)  # let the others run while the slot is held
            with lock:
                held[0] -= 1
            slots.give()

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert missed[0] == 0
    assert most[0] == CAP
    assert [slots.take(0.0) for _ in range(CAP + 1)] == [True] * CAP + [False]


def test_a_wait_for_a_slot_ends_at_its_timeout_and_a_given_slot_ends_it_early() -> None:
    slots = _Slots(1)
    assert slots.take(0.0)
    started = time.monotonic()
    assert not slots.take(0.2)
    assert time.monotonic() - started >= 0.2

    threading.Timer(0.1, slots.give).start()
    started = time.monotonic()
    assert slots.take(5.0)
    assert time.monotonic() - started < 4.0
