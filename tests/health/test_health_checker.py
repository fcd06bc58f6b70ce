"""Active checks against real loopback HTTP servers: a healthy one, one that starts failing,
one that refuses; and the election that runs them once per host, surviving a SIGKILLed leader."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from gw.health import NoHealthyTarget
from gw.health.balancer import Balancer
from gw.health.checker import ActiveChecker, CheckSpec, probe, record
from gw.health.layout import CHECK_REFUSED, CHECK_TIMEOUT
from gw.health.snapshot import snapshot
from gw.health.state import create
from gw.health.table import HealthTable
from tests.support.upstream import Upstream, wait_for

FORK = multiprocessing.get_context("fork")
Make = Callable[[], Upstream]


def refusing_url() -> str:
    """Return the URL of a loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def spec(url: str, **overrides: object) -> CheckSpec:
    fields: dict[str, object] = {
        "path": "/health",
        "interval": 0.1,
        "timeout": 0.5,
        "healthy_threshold": 2,
        "unhealthy_threshold": 3,
    }
    fields.update(overrides)
    return CheckSpec("orders", url, **fields)  # type: ignore[arg-type]


def check(table: HealthTable, s: CheckSpec, rounds: int) -> list[str]:
    """Run ``rounds`` checks of one target; return the changes they made."""
    return [record(table, s, probe(s)) for _ in range(rounds)]


def active_states(path: str) -> dict[str, bool | None]:
    found = {}
    for entry in snapshot(path):
        if entry["kind"] == "target":
            found[entry["target"]] = None if entry["active"] is None else entry["active"]["up"]
    return found


@pytest.fixture
def table_in(tmp_path: Path) -> Iterator[Callable[[list[str]], HealthTable]]:
    opened: list[HealthTable] = []

    def make(urls: list[str]) -> HealthTable:
        path = str(tmp_path / "health.table")
        create(path, [("orders", url) for url in urls], targets=16, upstreams=4, rows=8)
        opened.append(HealthTable.open(path))
        return opened[-1]

    yield make
    for table in opened:
        table.close()


def test_a_healthy_target_stays_up(
    make_upstream: Make, table_in: Callable[..., HealthTable]
) -> None:
    upstream = make_upstream()
    table = table_in([upstream.url])
    assert check(table, spec(upstream.url), 5) == [""] * 5
    assert active_states(table.path) == {upstream.url: True}
    assert upstream.count() == 5 and upstream.last().target == "/health"


def test_a_target_that_starts_failing_goes_down_then_comes_back(
    make_upstream: Make, table_in: Callable[..., HealthTable]
) -> None:
    upstream = make_upstream()
    table = table_in([upstream.url])
    s = spec(upstream.url)
    check(table, s, 2)
    upstream.force_status = 500
    assert check(table, s, 3) == ["", "", "down"]
    balancer = Balancer("orders", [(upstream.url, 1)], table=lambda: table)
    with pytest.raises(NoHealthyTarget):
        balancer.pick()
    upstream.force_status = None
    assert check(table, s, 2) == ["", "up"]
    balancer.pick().done(True)


def test_a_refusing_target_goes_down_and_gets_no_traffic(
    make_upstream: Make, table_in: Callable[..., HealthTable]
) -> None:
    good, bad = make_upstream().url, refusing_url()
    table = table_in([good, bad])
    assert probe(spec(bad)) == CHECK_REFUSED
    check(table, spec(good), 3)
    check(table, spec(bad), 3)
    assert active_states(table.path) == {good: True, bad: False}
    balancer = Balancer("orders", [(good, 1), (bad, 1)], table=lambda: table)
    assert {balancer.pick().target_index for _ in range(10)} == {0}


def test_a_target_too_slow_to_answer_fails_its_check(make_upstream: Make) -> None:
    upstream = make_upstream()
    upstream.delay = 2.0
    started = time.monotonic()
    assert probe(spec(upstream.url, timeout=0.2)) == CHECK_TIMEOUT
    assert time.monotonic() - started < 1.5


def test_the_expected_statuses_decide_what_passes(make_upstream: Make) -> None:
    upstream = make_upstream()
    upstream.force_status = 204
    s = spec(upstream.url, expect=((200, 200),))
    assert probe(s) == 204 and not s.accepts(204)
    assert spec(upstream.url).accepts(204)


def test_a_checker_thread_checks_every_target_on_its_interval(
    make_upstream: Make, table_in: Callable[..., HealthTable]
) -> None:
    ups = [make_upstream(), make_upstream()]
    table = table_in([u.url for u in ups])
    checker = ActiveChecker([spec(u.url) for u in ups], table=lambda: table)
    checker.start()
    try:
        assert wait_for(lambda: all(u.count() >= 4 for u in ups), timeout=5)
        assert checker.leading
    finally:
        checker.stop()
    assert not checker.leading
    assert set(active_states(table.path).values()) == {True}


def _run_checker(path: str, url: str, pipe: Connection) -> None:
    """Be a worker: open the table, start the checker thread, live until killed or told."""
    table = HealthTable.open(path)
    checker = ActiveChecker([spec(url, interval=0.1)], table=lambda: table)
    checker.start()
    pipe.send("started")
    pipe.poll(30)
    checker.stop()


def leader_pid(path: str) -> int:
    try:
        return int((Path(path).parent / "health.leader").read_text() or 0)
    except (OSError, ValueError):
        return 0


def test_one_worker_per_host_runs_the_checks_and_a_sigkilled_leader_is_replaced(
    make_upstream: Make, table_in: Callable[..., HealthTable]
) -> None:
    upstream = make_upstream()
    table = table_in([upstream.url])
    workers = [FORK.Pipe() for _ in range(3)]
    children = [
        FORK.Process(target=_run_checker, args=(table.path, upstream.url, theirs), daemon=True)
        for _, theirs in workers
    ]
    for child in children:
        child.start()
    assert all(ours.recv() == "started" for ours, _ in workers)
    before = upstream.count()
    time.sleep(1.0)
    checks = upstream.count() - before
    assert 5 <= checks <= 13, f"{checks} checks in 1 s at a 0.1 s interval: not one checker"
    leader = leader_pid(table.path)
    assert leader in {c.pid for c in children}
    os.kill(leader, signal.SIGKILL)
    killed_at = time.monotonic()
    assert wait_for(lambda: leader_pid(table.path) not in (0, leader), timeout=5)
    took_over = time.monotonic() - killed_at
    after = upstream.count()
    assert wait_for(lambda: upstream.count() >= after + 3, timeout=5)
    assert took_over < 1.0  # the followers retry every 0.05 s here
    for ours, _ in workers:
        ours.send("stop")
    for child in children:
        child.join(10)
