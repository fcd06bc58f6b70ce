"""1 GiB through the gateway in each direction keeps the worker's memory flat."""

from __future__ import annotations

import hashlib
import http.client
from collections.abc import Callable, Iterator

import pytest

from tests.support.gateway import GatewayProcess
from tests.support.upstream import Upstream

Start = Callable[..., GatewayProcess]
GIB = 1 << 30
BLOCK = bytes(range(256)) * 4096  # 1 MiB


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def blocks(total: int) -> Iterator[bytes]:
    for _ in range(total // len(BLOCK)):
        yield BLOCK


@pytest.mark.slow
def test_one_gib_each_way_keeps_worker_rss_growth_under_50_mb(
    gateway: Start, upstream: Upstream
) -> None:
    gw = gateway(
        {
            "server": {"max_body_bytes": 2 * GIB},
            "upstreams": {"svc": {"targets": [upstream.url], "read_timeout": 60}},
            "routes": [{"path": "/**", "upstream": "svc"}],
        },
        workers=1,
    )
    [worker] = gw.worker_pids()
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=120)
    conn.request("GET", "/warmup")
    conn.getresponse().read()
    before = rss_kib(worker)

    conn.request("POST", "/upload", body=blocks(GIB), encode_chunked=True)
    echo = conn.getresponse().read()
    expected = hashlib.sha256()
    for block in blocks(GIB):
        expected.update(block)
    assert f'"body_len": {GIB}'.encode() in echo
    assert expected.hexdigest().encode() in echo
    after_upload = rss_kib(worker)

    conn.request("GET", f"/__bytes/{GIB}")
    response = conn.getresponse()
    received = 0
    while chunk := response.read(1 << 20):
        received += len(chunk)
    assert response.status == 200 and received == GIB
    after_download = rss_kib(worker)
    conn.close()

    growth_mb = (max(after_upload, after_download) - before) / 1024
    print(f"worker RSS: {before / 1024:.1f} MB before, +{growth_mb:.1f} MB after 1 GiB each way")
    assert growth_mb < 50, f"worker RSS grew {growth_mb:.1f} MB"
