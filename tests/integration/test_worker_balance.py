"""Keep-alive clients are spread over every worker (PERF-NOTES: gthread workers collapse onto
one process when a pooled client's connections all land on the worker that accepted first)."""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from collections.abc import Callable

from tests.support.gateway import GatewayProcess
from tests.support.upstream import Upstream

Start = Callable[..., GatewayProcess]


def config(upstream: Upstream) -> dict[str, object]:
    return {
        "upstreams": {"svc": {"targets": [upstream.url]}},
        "routes": [{"path": "/**", "upstream": "svc"}],
    }


def pooled_load(port: int, connections: int, requests_each: int) -> int:
    """Drive ``connections`` kept-alive connections in parallel; return how many got 200."""
    ok = [0] * connections

    def run(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        deadline = time.monotonic() + 60
        for _ in range(requests_each):
            if time.monotonic() > deadline:
                break
            conn.request("GET", f"/c{index}")
            response = conn.getresponse()
            response.read()
            ok[index] += response.status == 200
            if response.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    return sum(ok)


def test_pooled_keep_alive_client_is_served_by_every_worker(
    gateway: Start, upstream: Upstream
) -> None:
    gw = gateway(config(upstream), workers=2, threads=4, extra_env={"GW_KEEPALIVE_REQUESTS": "25"})
    served = pooled_load(gw.port, connections=8, requests_each=150)
    assert served == 1200
    lines = gw.access_lines(count=1200, upstream="svc")
    per_worker = Counter(line["worker"] for line in lines if line["path"] != "/health")
    assert sum(per_worker.values()) == 1200
    assert len(per_worker) == 2, per_worker
    assert min(per_worker.values()) >= 1200 * 0.3, per_worker  # stock gthread: 0 %


def test_a_connection_is_closed_after_its_request_quota(gateway: Start, upstream: Upstream) -> None:
    gw = gateway(config(upstream), workers=1, extra_env={"GW_KEEPALIVE_REQUESTS": "5"})
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    answers = []
    for _ in range(5):
        conn.request("GET", "/x")
        response = conn.getresponse()
        response.read()
        answers.append(response.getheader("Connection"))
    conn.close()
    assert answers == ["keep-alive"] * 4 + ["close"]
