"""Dead workers' metrics files are compacted into one archive per type (issue 13, point 8).

Restarting workers must neither pile files up (every scrape reads every file) nor change a
total: a scrape that runs while the master compacts sees each count exactly once.
"""

from __future__ import annotations

import bisect
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.gateway import GatewayProcess
from tests.support.upstream import Upstream, wait_for

Start = Callable[..., GatewayProcess]
RESTARTS = 30
WORKERS = 2
PER_ROUND = 5


def api_total(text: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "gw_requests_total" and sample.labels.get("route") == "api":
                total += sample.value
    return total


class Scraper(threading.Thread):
    """Scrape without pause; record (answered before, total seen, sent after) per scrape."""

    def __init__(self, url: str, counts: dict[str, int], answered_at: list[float]) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.counts = counts
        self.answered_at = answered_at  # when each request was answered (monotonic)
        self.seen: list[tuple[int, float, int]] = []
        self.failed: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        session = requests.Session()
        deadline = time.monotonic() + 300
        while not self.stop.is_set() and time.monotonic() < deadline:
            # Workers publish their counts within 0.1 s: a scrape shows at least the requests
            # answered more than 0.25 s before it began.
            settled = bisect.bisect_left(self.answered_at, time.monotonic() - 0.25)
            try:
                response = session.get(f"{self.url}/metrics", timeout=5)
            except requests.RequestException:
                continue
            if response.status_code != 200:
                self.failed.append(response.text)
                continue
            self.seen.append((settled, api_total(response.text), self.counts["sent"]))


def test_restarted_workers_leave_a_bounded_number_of_files_and_exact_totals(
    gateway: Start, upstream: Upstream
) -> None:
    gw = gateway(
        {
            "upstreams": {"svc": {"targets": [upstream.url]}},
            "routes": [{"name": "api", "path": "/api/**", "upstream": "svc"}],
        },
        workers=WORKERS,
    )
    metrics_dir = Path(gw.env["GW_RUNTIME_DIR"]) / "metrics"
    counts = {"sent": 0, "answered": 0}
    answered_at: list[float] = []
    scraper = Scraper(gw.url, counts, answered_at)
    scraper.start()
    for round_ in range(RESTARTS):
        for i in range(PER_ROUND):
            counts["sent"] += 1
            status = requests.get(f"{gw.url}/api/{round_}/{i}", timeout=5).status_code
            assert status == 200
            counts["answered"] += 1
            answered_at.append(time.monotonic())
        # SIGKILL loses what a worker has not published yet (at most its last 0.1 s): the
        # kill comes once a scrape shows every answer, and the test is that none is lost then.
        assert wait_for(
            lambda: (
                api_total(requests.get(f"{gw.url}/metrics", timeout=5).text) == counts["answered"]
            ),
            timeout=5,
        )
        victim = gw.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        assert wait_for(
            lambda v=victim: v not in gw.worker_pids() and len(gw.worker_pids()) == WORKERS,
            timeout=20,
        )
    scraper.stop.set()
    scraper.join(timeout=30)

    files = sorted(p.name for p in metrics_dir.iterdir() if p.name.endswith(".db"))
    # Per live worker: counter, histogram, live gauge; plus one archive per type.
    assert len(files) <= 3 * WORKERS + 3, files
    sent = RESTARTS * PER_ROUND
    assert api_total(requests.get(f"{gw.url}/metrics", timeout=5).text) == sent
    assert scraper.seen, "no scrape succeeded"
    assert not scraper.failed, scraper.failed[:3]
    for settled, total, sent_after in scraper.seen:
        assert settled <= total <= sent_after, (settled, total, sent_after)
