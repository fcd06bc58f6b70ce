"""A Redis outage is logged once per incident, with counts, not once per request.

Real gunicorn (one worker, so one process's log), a real redis-server shared by the rate
limiter (``fail_open``) and the response cache, stopped under traffic and started again on the
same port. Before issue 13 every request logged one line per failing Redis call (13,936 lines
in 14 s of outage); now each backend logs the start of the incident, at most one line per
interval while it lasts, and its end with the number of failures.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import requests

from tests.fixtures.redis_server import RedisServer, require_redis_server
from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.upstream import Upstream, start_upstream

pytestmark = pytest.mark.integration

OUTAGE_REQUESTS = 300
LIMITER = "rate limiter"
CACHE = "cache redis"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(require_redis_server()).start()
    yield server
    server.close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = start_upstream()
    yield server
    server.close()


def test_a_redis_outage_logs_one_incident_per_backend_with_counts(
    redis_server: RedisServer, upstream: Upstream
) -> None:
    gw = start_gateway(_config(upstream, redis_server.url), workers=1)
    try:
        with requests.Session() as client:
            assert _statuses(client, gw, 5) == {200}  # both backends answer
            redis_server.stop()
            assert _statuses(client, gw, OUTAGE_REQUESTS) == {200}  # fail_open, cache misses
            redis_server.restart()
            assert _statuses(client, gw, 5) == {200}
        log = gw.log_text()
    finally:
        gw.stop()

    for backend in (LIMITER, CACHE):
        lines = [line for line in log.splitlines() if backend in line]
        assert 2 <= len(lines) <= 4, f"{len(lines)} lines about {backend}:\n" + "\n".join(
            lines[:10]
        )
        assert re.search(rf"{backend} failed: .*further failures are counted", lines[0])
        ended = re.search(rf"{backend} recovered after [\d.]+s: (\d+) failure", lines[-1])
        assert ended, lines[-1]
        assert int(ended.group(1)) >= OUTAGE_REQUESTS  # every request's failure was counted
    limiter_total = re.search(rf"{LIMITER} recovered after [\d.]+s: (\d+)", log)
    assert limiter_total and int(limiter_total.group(1)) == OUTAGE_REQUESTS  # one limit each


def _statuses(client: requests.Session, gw: GatewayProcess, count: int) -> set[int]:
    return {client.get(f"{gw.url}/api/items/{i}", timeout=10).status_code for i in range(count)}


def _config(upstream: Upstream, redis_url: str) -> dict[str, object]:
    return {
        "upstreams": {"svc": {"targets": [upstream.url]}},
        "routes": [{"name": "api", "path": "/api/**", "upstream": "svc", "cache": {"ttl": 30}}],
        "rate_limiting": {
            "backend": redis_url,
            "on_error": "fail_open",
            "default": {"requests_per_second": 100_000, "key": "route"},
        },
        "cache_store": {"backend": redis_url},
    }
