"""Finished requests are handed on in batches, in order, once each, to every consumer."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from gw.core.exchange import Exchange
from gw.observe import batches


@pytest.fixture
def seen() -> Iterator[list[list[str]]]:
    got: list[list[str]] = []
    batches.consume("test", lambda batch: got.append([e.request_id for e in batch]))
    yield got
    batches.flush()
    batches.consume("test", None)


def ended(number: int) -> Exchange:
    return Exchange(f"req-{number}", "GET", "/x")


def test_a_full_batch_is_handed_on_by_the_request_that_fills_it(seen: list[list[str]]) -> None:
    for number in range(batches.BATCH - 1):
        batches.add(ended(number))
    assert seen == []  # (the background thread waits MAX_WAIT)
    batches.add(ended(batches.BATCH - 1))
    assert seen == [[f"req-{n}" for n in range(batches.BATCH)]]


def test_each_request_is_handed_on_once_in_the_order_they_ended(seen: list[list[str]]) -> None:
    def finish(first: int) -> None:
        for number in range(first, first + 500):
            batches.add(ended(number))

    threads = [threading.Thread(target=finish, args=(n * 500,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batches.flush()
    handed = [request_id for batch in seen for request_id in batch]
    assert sorted(handed) == sorted(f"req-{n}" for n in range(2000))
    for n in range(4):  # each thread's requests, in the order that thread ended them
        mine = [r for r in handed if n * 500 <= int(r[4:]) < (n + 1) * 500]
        assert mine == [f"req-{i}" for i in range(n * 500, (n + 1) * 500)]


def test_a_consumer_that_fails_costs_the_others_nothing(caplog: pytest.LogCaptureFixture) -> None:
    def broken(batch: list[Exchange]) -> None:
        raise RuntimeError("broken")

    got: list[str] = []
    batches.consume("broken", broken)  # asked first
    batches.consume("after", lambda batch: got.extend(e.request_id for e in batch))
    try:
        batches.add(ended(1))
        with caplog.at_level(logging.ERROR, logger="gw"):
            batches.flush()
    finally:
        batches.consume("broken", None)
        batches.consume("after", None)
    assert got == ["req-1"]
    assert any(
        "broken: a batch of 1 finished requests was lost" in r.message for r in caplog.records
    )


def test_a_child_process_drops_only_the_consumers_of_this_process() -> None:
    code = (
        "import os, sys\n"
        "from gw.observe import batches\n"
        "batches.consume('kept', print)\n"
        "batches.consume('mine', print, this_process_only=True)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os._exit(0 if sorted(batches.consumers) == ['kept'] else 1)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "assert sorted(batches.consumers) == ['kept', 'mine']\n"
        "sys.exit(os.waitstatus_to_exitcode(status))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr


def test_a_flush_waits_for_a_batch_another_thread_is_handing_on() -> None:
    """A publish (at exit, before a scrape) flushes first: its counts must include a batch the
    background thread took just before and is still handing on, or they are lost at exit."""
    handing_on, release = threading.Event(), threading.Event()
    got: list[str] = []

    def slow(batch: list[Exchange]) -> None:
        handing_on.set()
        release.wait(5)
        got.extend(e.request_id for e in batch)

    batches.consume("slow", slow)
    try:
        batches.add(ended(1))
        other = threading.Thread(target=batches.flush)
        other.start()  # takes the request and hands it on, slowly
        assert handing_on.wait(5)
        threading.Timer(0.2, release.set).start()
        batches.flush()  # the queue is empty now; the request is not handed on yet
        assert got == ["req-1"]
        other.join(5)
    finally:
        release.set()
        batches.consume("slow", None)
