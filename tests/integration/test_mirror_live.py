"""Mirroring under real gunicorn, both worker kinds: a shadow that takes 2 s to answer adds
nothing to the client's latency, receives the copy marked in its Host, and is counted."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.gateway import start_gateway
from tests.support.upstream import Upstream, start_upstream

pytestmark = pytest.mark.integration


@pytest.fixture()
def upstreams() -> Iterator[tuple[Upstream, Upstream]]:
    main, shadow = start_upstream(), start_upstream()
    shadow.delay = 2.0
    yield main, shadow
    main.close()
    shadow.close()


def mirrored(gateway_url: str) -> dict[str, float]:
    text = requests.get(f"{gateway_url}/metrics", timeout=5).text
    return {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "gw_mirror_requests_total"
    }


@pytest.mark.parametrize("worker", [None, "gw.edge.worker.BalancedThreadWorker"])
def test_a_slow_shadow_adds_no_latency_and_is_counted(
    upstreams: tuple[Upstream, Upstream], worker: str | None
) -> None:
    main, shadow = upstreams
    config = {
        "upstreams": {"orders": {"targets": [main.url]}, "next": {"targets": [shadow.url]}},
        "routes": [
            {"path": "/api/**", "upstream": "orders", "mirror": {"upstream": "next"}},
            {"path": "/plain/**", "upstream": "orders"},
        ],
    }
    gateway = start_gateway(config, workers=1, worker_class=worker)
    try:
        started = time.monotonic()
        answer = requests.post(f"{gateway.url}/api/orders", data=b"order-1", timeout=5)
        took = time.monotonic() - started
        assert answer.status_code == 200 and answer.json()["body_len"] == 7
        assert took < 0.5  # the shadow sleeps 2 s before answering
        deadline = time.monotonic() + 5
        while shadow.count() < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        copy = shadow.last()
        assert (copy.method, copy.target, copy.body_len) == ("POST", "/api/orders", 7)
        assert copy.header("Host") == f"127.0.0.1-shadow:{shadow.port}"
        assert copy.header("X-Request-Id") == answer.headers["X-Request-Id"]
        # Counted once the shadow answered; a later request publishes the worker's counts.
        deadline = time.monotonic() + 8
        while mirrored(gateway.url).get("2xx") != 1.0:
            assert time.monotonic() < deadline, mirrored(gateway.url)
            requests.get(f"{gateway.url}/plain/x", timeout=5)
            time.sleep(0.2)
        assert main.count() >= 2 and shadow.count() == 1
    finally:
        gateway.stop()
