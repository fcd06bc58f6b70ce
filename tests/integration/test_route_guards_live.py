"""Per-route guards under real gunicorn (default worker): a chunked upload over a route's
``max_body_bytes`` and a client address in its ``deny_from`` never reach the upstream."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.upstream import Upstream, start_upstream

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = start_upstream()
    yield server
    server.close()


@pytest.fixture(scope="module")
def gateway(upstream: Upstream) -> Iterator[GatewayProcess]:
    config = {
        "upstreams": {"svc": {"targets": [upstream.url]}},
        "routes": [
            {"path": "/small/**", "upstream": "svc", "max_body_bytes": 2000},
            {"path": "/blocked/**", "upstream": "svc", "deny_from": ["127.0.0.0/8"]},
            {"path": "/local/**", "upstream": "svc", "allow_from": ["127.0.0.1/32"]},
        ],
    }
    process = start_gateway(config, workers=1)
    yield process
    process.stop()


def test_a_chunked_upload_over_the_routes_limit_is_413(
    gateway: GatewayProcess, upstream: Upstream
) -> None:
    before = upstream.count()
    over = requests.post(f"{gateway.url}/small/x", data=iter([b"a" * 1500, b"b" * 1500]), timeout=5)
    assert over.status_code == 413 and over.json()["error"] == "body_too_large"
    declared = requests.post(f"{gateway.url}/small/x", data=b"c" * 2001, timeout=5)
    assert declared.status_code == 413
    assert upstream.count() == before
    parts = iter([b"a" * 1000, b"b" * 1000])
    under = requests.post(f"{gateway.url}/small/x", data=parts, timeout=5)
    assert under.status_code == 200 and under.json()["body_len"] == 2000


def test_a_denied_address_gets_403_and_an_allowed_one_passes(
    gateway: GatewayProcess, upstream: Upstream
) -> None:
    before = upstream.count()
    denied = requests.get(f"{gateway.url}/blocked/x", timeout=5)
    assert denied.status_code == 403 and denied.json()["error"] == "ip_forbidden"
    assert upstream.count() == before
    assert requests.get(f"{gateway.url}/local/x", timeout=5).status_code == 200
    assert upstream.count() == before + 1
