"""Target state across real processes, as gunicorn workers share it: one worker's ejection holds
for all, in-flight counts add up across workers and do not leak when one is SIGKILLed, a
SIGKILLed lock holder does not wedge anyone, and exactly one request host-wide probes.

Every child is a forked process that opens the table itself, as a worker does after the fork.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from gw.health import NoHealthyTarget
from gw.health.balancer import Balancer
from gw.health.choice import CONNECT, PassivePolicy, TargetChoice
from gw.health.snapshot import snapshot
from gw.health.table import HealthTable
from tests.health.helpers import URLS

FORK = multiprocessing.get_context("fork")
POLICY = PassivePolicy(consecutive_failures=3, cooldown=0.4, max_cooldown=5, probe_timeout=5)


def worker_balancer(path: str, balance: str = "round_robin") -> tuple[HealthTable, Balancer]:
    """Open the table and build a balancer the way a worker does after the fork."""
    table = HealthTable.open(path, deadline=10.0)
    targets = [(url, 1) for url in URLS]
    return table, Balancer("orders", targets, balance=balance, passive=POLICY, table=lambda: table)


def spawn(target: Callable[..., None], *args: Any) -> tuple[Any, Connection]:
    """Start a forked child running ``target(*args, pipe)``; return it and our pipe end."""
    ours, theirs = FORK.Pipe()
    child = FORK.Process(target=target, args=(*args, theirs), daemon=True)
    child.start()
    theirs.close()
    return child, ours


def outstanding(path: str) -> list[int]:
    by_url = {e["target"]: e["outstanding"] for e in snapshot(path) if e["kind"] == "target"}
    return [by_url[url] for url in URLS]


def _eject_target_one(path: str, pipe: Connection) -> None:
    _, b = worker_balancer(path)
    failed = 0
    while failed < 3:
        choice = b.pick()
        ok = choice.target_index != 1
        choice.done(ok, CONNECT)
        failed += not ok
    pipe.send("ejected")


def _pick_after_go(path: str, pipe: Connection) -> None:
    _, b = worker_balancer(path)
    b.pick().done(True)  # opened and in use before the ejection happens
    pipe.send("ready")
    pipe.recv()
    seen = set()
    for _ in range(30):
        choice = b.pick()
        seen.add(choice.target_index)
        choice.done(True)
    pipe.send(seen)


def test_an_ejection_in_one_worker_holds_in_every_other(table_path: str) -> None:
    watcher, watch = spawn(_pick_after_go, table_path)
    assert watch.recv() == "ready"
    ejector, eject = spawn(_eject_target_one, table_path)
    assert eject.poll(10) and eject.recv() == "ejected"
    watch.send("go")
    assert watch.poll(10)
    assert watch.recv() == {0, 2}
    for child in (watcher, ejector):
        child.join(10)
        assert child.exitcode == 0


def _hold_picks(path: str, count: int, balance: str, pipe: Connection) -> None:
    _, b = worker_balancer(path, balance)
    held = [b.pick() for _ in range(count)]
    pipe.send([c.target_index for c in held])
    if pipe.recv() == "finish":
        for choice in held:
            choice.done(True)
        pipe.send("done")
        pipe.recv()  # stay alive until told, so the count is not reaped early


def test_in_flight_counts_add_up_across_four_processes(table_path: str) -> None:
    children = [spawn(_hold_picks, table_path, 6, "least_outstanding") for _ in range(4)]
    picked = [pipe.recv() for _, pipe in children if pipe.poll(10)]
    assert len(picked) == 4
    counts = outstanding(table_path)
    assert sum(counts) == 24
    assert counts == [sum(p.count(i) for p in picked) for i in range(3)]
    assert max(counts) - min(counts) <= 2  # least outstanding across the host: even
    for _, pipe in children:
        pipe.send("finish")
    assert all(pipe.recv() == "done" for _, pipe in children)
    assert outstanding(table_path) == [0, 0, 0]
    for child, pipe in children:
        pipe.send("exit")
        child.join(10)


def test_a_sigkilled_worker_does_not_leak_its_in_flight_count(table_path: str) -> None:
    """gunicorn SIGKILLs a worker that times out mid-request: its count must come back."""
    victim, pipe = spawn(_hold_picks, table_path, 5, "least_outstanding")
    survivor, other = spawn(_hold_picks, table_path, 3, "least_outstanding")
    assert pipe.poll(10) and other.poll(10)
    pipe.recv()
    kept = other.recv()
    assert sum(outstanding(table_path)) == 8
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(10)
    replacement = HealthTable.open(table_path)  # a new worker reaps on opening
    try:
        assert outstanding(table_path) == [kept.count(i) for i in range(3)]  # the survivor's
        assert replacement.reap() == 0
    finally:
        replacement.close()
    other.send("finish")
    assert other.recv() == "done"
    assert outstanding(table_path) == [0, 0, 0]
    other.send("exit")
    survivor.join(10)


def _hold_lock(path: str, pipe: Connection) -> None:
    table = HealthTable.open(path)
    table.enter(table.target("orders", URLS[0]))
    pipe.send("held")
    time.sleep(60)


def _finish_after_go(path: str, pipe: Connection) -> None:
    _table, b = worker_balancer(path)  # deadline 10 s
    choices: list[TargetChoice] = [b.pick() for _ in range(3)]
    pipe.send("ready")
    pipe.recv()
    for choice in choices:
        choice.done(False, CONNECT)  # a failure takes the lock; target 0's is held
    pipe.send(time.monotonic_ns())


def test_a_sigkilled_lock_holder_does_not_wedge_the_others(table_path: str) -> None:
    waiters = [spawn(_finish_after_go, table_path) for _ in range(3)]
    assert all(pipe.recv() == "ready" for _, pipe in waiters)
    holder, held = spawn(_hold_lock, table_path)
    assert held.recv() == "held"
    for _, pipe in waiters:
        pipe.send("go")
    time.sleep(0.2)
    assert not any(pipe.poll() for _, pipe in waiters), "a waiter got a lock that was held"
    killed_at = time.monotonic_ns()
    os.kill(holder.pid, signal.SIGKILL)
    finished = [pipe.recv() for _, pipe in waiters if pipe.poll(5)]
    assert len(finished) == 3
    assert max(finished) - killed_at < 500_000_000  # their deadline was 10 s
    holder.join(10)
    failures = {e["target"]: e["failures"] for e in snapshot(table_path) if e["kind"] == "target"}
    assert failures == {url: 3 for url in URLS}  # every waiter's result was recorded


def _race_for_the_probe(path: str, start_at: int, pipe: Connection) -> None:
    table = HealthTable.open(path, deadline=10.0)
    b = Balancer("orders", [(URLS[0], 1)], passive=POLICY, table=lambda: table)
    time.sleep(max(0, start_at - time.monotonic_ns()) / 1e9)
    probes = picks = refused = 0
    stop_at = time.monotonic_ns() + 600_000_000
    while time.monotonic_ns() < stop_at:
        try:
            choice = b.pick()
        except NoHealthyTarget:
            refused += 1
            continue
        picks += 1
        probes += choice.probe  # never reported: the probe stays claimed
    pipe.send((probes, picks, refused))


def test_exactly_one_request_on_the_host_gets_the_half_open_probe(table_path: str) -> None:
    table = HealthTable.open(table_path)
    only = Balancer("orders", [(URLS[0], 1)], passive=POLICY, table=lambda: table)
    for _ in range(3):
        only.pick().done(False, CONNECT)  # ejected for 0.4 s
    start_at = time.monotonic_ns() + 200_000_000
    racers = [spawn(_race_for_the_probe, table_path, start_at) for _ in range(4)]
    results = [pipe.recv() for _, pipe in racers if pipe.poll(10)]
    assert len(results) == 4
    assert sum(r[0] for r in results) == 1
    assert sum(r[1] for r in results) == 1  # nothing else was sent to it either
    assert sum(r[2] for r in results) > 100  # everyone else was answered 503 at once
    table.close()
