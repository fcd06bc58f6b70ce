"""Metrics across real gunicorn workers: a scrape answered by any one worker shows the whole
host's counts, those of a SIGKILLed worker included, and forgets a dead worker's live state."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.metrics.scrape import Found, scrape_until, total, value
from tests.support.gateway import free_port

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CONFIG = HERE / "gunicorn_metrics.conf.py"
WORKERS = 3
PATHS = ("/orders/{}", "/users/{}", "/nope/{}")
EXPECTED = (("orders", "2xx"), ("users", "2xx"), ("(none)", "4xx"))


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    metrics_dir: Path
    hang_file: Path
    log: Path

    def workers(self) -> list[int]:
        out = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False
        )
        return [int(p) for p in out.stdout.split()]

    def scrape(self, when: Callable[[Found], bool] = lambda found: True) -> Found:
        """A scrape, repeated for up to 5 s until ``when`` holds (a worker publishes its
        counts within 0.1 s)."""
        return scrape_until(f"{self.url}/metrics", when)


def _until(check: Callable[[], bool], what: str, server: Server, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}:\n{server.log.read_text()}")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if "multiproc_dir" not in k.lower()}
    env.update(
        GW_RUNTIME_DIR=str(tmp_path / "run"),
        METRICS_TEST_BIND=f"127.0.0.1:{port}",
        METRICS_TEST_HANG_FILE=str(tmp_path / "hang.pid"),
        PYTHONUNBUFFERED="1",
    )
    log = tmp_path / "gunicorn.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(CONFIG), "tests.metrics.metrics_app:app"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    server = Server(proc, url, tmp_path / "run" / "metrics", tmp_path / "hang.pid", log)
    try:
        _until(lambda: len(server.workers()) == WORKERS and _answers(server), "workers", server)
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _answers(server: Server) -> bool:
    try:
        return requests.get(f"{server.url}/metrics", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def _send(server: Server, first: int, count: int) -> Counter[int]:
    """Send ``count`` requests on fresh connections (so every worker takes some); count pids."""

    def one(i: int) -> int:
        answer = requests.get(
            server.url + PATHS[i % 3].format(i), headers={"Connection": "close"}, timeout=10
        )
        assert answer.status_code == (404 if i % 3 == 2 else 200)
        return int(answer.headers["X-Worker"])

    with ThreadPoolExecutor(max_workers=4) as pool:
        return Counter(pool.map(one, range(first, first + count)))


def _expected(indices: range) -> Counter[tuple[str, str]]:
    return Counter(EXPECTED[i % 3] for i in indices)


def _counted(found: dict[Any, float]) -> Counter[tuple[str, str]]:
    counted: Counter[tuple[str, str]] = Counter()
    for route, status_class in EXPECTED:
        n = value(found, "gw_requests_total", route=route, method="GET", status_class=status_class)
        counted[(route, status_class)] = int(n or 0)
    return counted


def test_a_scrape_adds_up_every_workers_requests_even_after_a_worker_is_killed(
    server: Server,
) -> None:
    first, second = 120, 120
    pids = _send(server, 0, first)

    # Pin a keep-alive connection to one worker, count on it, then hang a request there.
    session = requests.Session()
    pinned = Counter(
        int(session.get(f"{server.url}/orders/k{i}", timeout=10).headers["X-Worker"])
        for i in range(10)
    )
    assert len(pinned) == 1
    victim = next(iter(pinned))
    pids += pinned
    hang = threading.Thread(target=_swallow, args=(session, f"{server.url}/hang"), daemon=True)
    hang.start()
    _until(lambda: server.hang_file.exists() and server.hang_file.read_text() != "", "hang", server)
    assert int(server.hang_file.read_text()) == victim

    sent = _expected(range(first)) + Counter({("orders", "2xx"): 10})
    found = server.scrape(when=lambda found: _counted(found) == sent)
    assert _counted(found) == sent
    assert value(found, "gw_requests_in_flight") == 1

    os.kill(victim, signal.SIGKILL)
    hang.join(timeout=15)
    _until(
        lambda: victim not in server.workers() and len(server.workers()) == WORKERS,
        "the killed worker to be replaced",
        server,
    )
    # The dead worker's in-flight request is gone; its counts are not.
    found = server.scrape(when=lambda found: value(found, "gw_requests_in_flight") == 0)
    assert value(found, "gw_requests_in_flight") == 0
    assert _counted(found) == sent

    pids += _send(server, first, second)
    sent += _expected(range(first, first + second))
    found = server.scrape(when=lambda found: _counted(found) == sent)
    assert _counted(found) == sent
    assert total(found, "gw_requests_total") == first + 10 + second
    for route in ("orders", "users", "(none)"):
        routed = sum(n for (r, _), n in sent.items() if r == route)
        assert value(found, "gw_request_duration_seconds_count", route=route) == routed
        assert value(found, "gw_request_duration_seconds_bucket", route=route, le="+Inf") == routed

    assert pids[victim] >= 10  # the killed worker's share is in the totals above
    assert len(pids) >= 2, f"every request went to one worker: {pids}"
    master_files = list(server.metrics_dir.glob(f"*_{server.proc.pid}.db"))
    assert master_files == [], "the master must not own metric files"


def test_a_scraper_that_asks_for_openmetrics_gets_it(server: Server) -> None:
    _send(server, 0, 6)
    server.scrape(when=lambda found: _counted(found) == _expected(range(6)))
    answer = requests.get(
        f"{server.url}/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
        timeout=10,
    )
    assert answer.headers["Content-Type"].startswith("application/openmetrics-text")
    assert answer.text.endswith("# EOF\n")
    assert 'gw_requests_total{method="GET",route="orders",status_class="2xx"} 2.0' in answer.text


def test_counts_survive_a_graceful_reload(server: Server) -> None:
    """After a HUP every worker is new; the totals carry on instead of starting over."""
    _send(server, 0, 30)
    old = set(server.workers())
    server.proc.send_signal(signal.SIGHUP)
    _until(
        lambda: len(server.workers()) == WORKERS and not old & set(server.workers()),
        "every worker to be replaced",
        server,
    )
    _send(server, 30, 30)
    found = server.scrape(when=lambda found: _counted(found) == _expected(range(60)))
    assert _counted(found) == _expected(range(60))
    assert value(found, "gw_requests_in_flight") == 0


def _swallow(session: requests.Session, url: str) -> None:
    # The worker serving it is killed: the connection drops.
    with contextlib.suppress(requests.RequestException):
        session.get(url, timeout=30)
