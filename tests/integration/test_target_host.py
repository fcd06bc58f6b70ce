"""Every target gets its own Host: with two targets, each one receives its own host:port,
for proxied requests and for aggregate parts alike (issue 12, point 4)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.upstream import Upstream, start_upstream


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[GatewayProcess, Upstream, Upstream]]:
    first, second = start_upstream(), start_upstream()
    config = {
        "upstreams": {"svc": {"targets": [first.url, second.url]}},
        "routes": [
            {"name": "proxied", "path": "/p/**", "upstream": "svc"},
            {
                "name": "composed",
                "path": "/home",
                "methods": ["GET"],
                "aggregate": {"parts": [{"key": "a", "upstream": "svc", "path": "/part"}]},
            },
        ],
    }
    gw = start_gateway(config, workers=1)
    yield gw, first, second
    gw.stop()
    first.close()
    second.close()


@pytest.mark.parametrize("path", ["/p/x", "/home"], ids=["proxied", "aggregate-part"])
def test_each_target_receives_its_own_host(
    stack: tuple[GatewayProcess, Upstream, Upstream], path: str
) -> None:
    gw, first, second = stack
    for upstream in (first, second):
        with upstream.lock:
            upstream.received.clear()
    for _ in range(6):
        assert requests.get(gw.url + path, timeout=10).status_code == 200
    for upstream in (first, second):
        with upstream.lock:
            hosts = {r.header("Host") for r in upstream.received}
        assert upstream.received, "round robin sends to both targets"
        assert hosts == {f"127.0.0.1:{upstream.port}"}
