"""``GW_WORKER_CLASS=sync`` means one request at a time per worker, whatever GW_THREADS says.

gunicorn turns ``sync`` into ``gthread`` without a word when ``threads > 1``; GW_THREADS
defaults to 8, so "sync" silently served 8 requests at once per worker (issue 13, point 8).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from tests.support.gateway import start_gateway

pytestmark = pytest.mark.integration


class CountingUpstream(ThreadingHTTPServer):
    """Answers after ``delay`` seconds; remembers the most requests it held at once."""

    daemon_threads = True

    def __init__(self, delay: float) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.delay, self.in_flight, self.most_in_flight = delay, 0, 0
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # keep-alive: head and body are two writes
    server: CountingUpstream

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.in_flight += 1
            self.server.most_in_flight = max(self.server.most_in_flight, self.server.in_flight)
        time.sleep(self.server.delay)
        with self.server.lock:
            self.server.in_flight -= 1
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


@pytest.fixture
def upstream() -> Iterator[CountingUpstream]:
    server = CountingUpstream(delay=0.5)
    yield server
    server.shutdown()
    server.server_close()


def test_sync_means_one_thread_even_with_gw_threads_set(upstream: CountingUpstream) -> None:
    config = {
        "upstreams": {"svc": {"targets": [upstream.url]}},
        "routes": [{"name": "slow", "path": "/slow/**", "upstream": "svc"}],
    }
    gw = start_gateway(config, workers=1, threads=4, worker_class="sync")
    try:
        statuses: list[int] = []
        clients = [
            threading.Thread(
                target=lambda i=i: statuses.append(
                    requests.get(f"{gw.url}/slow/{i}", timeout=10).status_code
                )
            )
            for i in range(3)
        ]
        for client in clients:
            client.start()
        for client in clients:
            client.join(15)
        log = gw.log_text()
    finally:
        gw.stop()
    assert statuses == [200, 200, 200]
    assert upstream.most_in_flight == 1  # the one worker served them one after the other
    assert "Using worker: sync" in log, [line for line in log.splitlines() if "Using" in line]
