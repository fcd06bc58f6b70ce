"""One request is delivered at most ``attempts`` times, however many warm connections the pool
holds (issue 13, point 2): an upstream that reads a GET and then closes the connection without
answering saw it 17 times with ``attempts: 1`` and 16 pooled connections."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.support.evil_upstream import CLOSE, EvilUpstream, start_evil_upstream
from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.rawhttp import get

POOL = 16


@pytest.fixture(scope="module")
def evil() -> Iterator[EvilUpstream]:
    upstream = start_evil_upstream({"drop": [CLOSE]})
    yield upstream
    upstream.close()


def gateway(evil: EvilUpstream, retries: dict[str, Any]) -> GatewayProcess:
    config = {
        "upstreams": {"svc": {"targets": [evil.url], "pool_size": POOL, "retries": retries}},
        "routes": [{"path": "/**", "upstream": "svc"}],
    }
    return start_gateway(config, workers=1, threads=POOL)


def warm(gw: GatewayProcess) -> None:
    """Fill the worker's pool with POOL idle kept-alive connections."""
    with ThreadPoolExecutor(POOL) as pool:
        answers = list(pool.map(lambda i: get(gw.port, f"/ok/w{i}"), range(POOL * 2)))
    assert all(a.status == 200 for a in answers)


@pytest.mark.parametrize(
    ("retries", "most"),
    [
        ({"attempts": 1}, 1),
        ({"attempts": 2}, 2),  # retry_on: connect_failure and reset: retried once
        ({"attempts": 3, "retry_on": ["reset"]}, 3),
    ],
    ids=["attempts-1", "attempts-2-default", "attempts-3-on-reset"],
)
@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_a_dropped_request_is_delivered_at_most_attempts_times(
    evil: EvilUpstream, retries: dict[str, Any], most: int, method: str
) -> None:
    gw = gateway(evil, retries)
    try:
        warm(gw)
        before = len(evil.requests_for("/case/drop"))
        answer = get(gw.port, "/case/drop", method=method)
        delivered = len(evil.requests_for("/case/drop")) - before
    finally:
        gw.stop()
    assert answer.status == 502
    assert 1 <= delivered <= most, f"delivered {delivered} times"
