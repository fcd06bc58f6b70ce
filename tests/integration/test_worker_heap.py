"""A worker keeps the garbage collector off the objects that loading gw made.

At CPython's defaults a loaded worker walked its ~65,000 startup objects in every full
collection, stopping every connection for up to 28 ms (the p99 of one worker at 64
connections) and spending about 12 µs a request collecting (``gw.host.process``).
"""

from __future__ import annotations

import pytest
import requests

from gw.host.process import YOUNG_COLLECTION_EVERY
from tests.support.gateway import start_gateway
from tests.support.upstream import Upstream

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "worker_class",
    ["gw.edge.worker.BalancedGeventWorker", "gw.edge.worker.BalancedThreadWorker", "sync"],
)
def test_each_worker_freezes_what_loading_gw_made(upstream: Upstream, worker_class: str) -> None:
    config = {
        "upstreams": {"api": {"targets": [upstream.url]}},
        "routes": [{"name": "api", "path": "/api/**", "upstream": "api"}],
    }
    gw = start_gateway(
        config, workers=1, worker_class=worker_class, app="tests.support.heap_probe:app"
    )
    try:
        assert requests.get(f"{gw.url}/api/x", timeout=5).status_code == 200
        heap = requests.get(f"{gw.url}/heap-probe", timeout=5).json()
    finally:
        gw.stop()

    # The config, routes, pydantic, cryptography and the rest of what loading made.
    assert heap["frozen"] > 20_000
    assert heap["threshold"][0] == YOUNG_COLLECTION_EVERY
