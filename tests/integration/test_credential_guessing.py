"""Credential guessing through real gunicorn (2 workers): failed authentications are counted
per client address in the host's shared table, and an address over its budget gets 429 on
every route that checks credentials, until its budget refills."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from gw.auth import hash_api_key
from tests.fixtures.redis_server import RedisServer, require_redis_server
from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.tokens import AUDIENCE, ISSUER, SECRET, claims, mint_hs256
from tests.support.upstream import Upstream, start_upstream

GOOD_KEY = "gwk_throttle_" + "g" * 32


def config(upstream: Upstream, **auth: Any) -> dict[str, Any]:
    return {
        "server": {"trusted_proxies": ["127.0.0.1/32"]},  # X-Forwarded-For names the client
        "upstreams": {"svc": {"targets": [upstream.url]}},
        "auth": {
            "type": "jwt_or_api_key",
            "issuer": ISSUER,
            "secret": SECRET,
            "audiences": [AUDIENCE],
            "api_keys": {
                "keys": [{"id": "good", "sha256": hash_api_key(GOOD_KEY), "consumer": "acme"}]
            },
            **auth,
        },
        "routes": [
            {"name": "api", "path": "/api/**", "upstream": "svc"},
            {"name": "open", "path": "/open/**", "upstream": "svc", "auth": "none"},
        ],
    }


def call(
    session: requests.Session | Any, gw: GatewayProcess, client: str, path: str = "/api/x", **h: str
) -> requests.Response:
    response: requests.Response = session.get(
        gw.url + path, headers={"X-Forwarded-For": client, **h}, timeout=5
    )
    return response


def bad_key(i: int) -> dict[str, str]:
    return {"X-API-Key": f"guess-{i:04d}-" + "x" * 20}


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = start_upstream()
    yield server
    server.close()


@pytest.fixture
def default_gw(upstream: Upstream) -> Iterator[GatewayProcess]:
    """The audit's setup: no throttle configured, so the default applies."""
    gw = start_gateway(config(upstream), workers=2)
    yield gw
    gw.stop()


def test_guessing_api_keys_is_throttled_by_default(
    default_gw: GatewayProcess, upstream: Upstream
) -> None:
    before = upstream.count()
    statuses = [
        call(requests, default_gw, "203.0.113.9", **bad_key(i)).status_code for i in range(40)
    ]
    assert statuses[:20] == [401] * 20  # the default budget: 20 failures a minute
    assert set(statuses[20:]) == {429}
    refused = call(requests, default_gw, "203.0.113.9", **bad_key(99))
    assert refused.json()["error"] == "too_many_auth_failures"
    assert refused.headers["Content-Type"] == "application/json"
    assert int(refused.headers["Retry-After"]) >= 1
    assert upstream.count() == before


@pytest.fixture
def small_gw(upstream: Upstream) -> Iterator[GatewayProcess]:
    gw = start_gateway(config(upstream, failure_limit={"limit": 5, "period": 5}), workers=2)
    yield gw
    gw.stop()


def one_session_per_worker(gw: GatewayProcess, workers: int = 2) -> list[requests.Session]:
    """Open kept-alive connections until each worker holds one; return one session each."""
    found: dict[int, requests.Session] = {}
    for _ in range(60):
        session = requests.Session()
        request_id = session.get(gw.url + "/open/probe", timeout=5).headers["X-Request-Id"]
        pid = next(
            line["worker"]
            for line in gw.access_lines(request_id=request_id)
            if line.get("request_id") == request_id
        )
        found.setdefault(pid, session)
        if len(found) == workers:
            return list(found.values())
    pytest.fail(f"60 connections all went to {sorted(found)}")


def test_budget_is_shared_by_both_workers_and_refills(
    small_gw: GatewayProcess, upstream: Upstream
) -> None:
    client = "198.51.100.7"
    sessions = one_session_per_worker(small_gw)  # the failures alternate between workers
    answers = [call(sessions[i % 2], small_gw, client, **bad_key(i)) for i in range(6)]
    assert [a.status_code for a in answers] == [401] * 5 + [429]
    # Each worker writes its own batches: the log's order is not the requests' order.
    ids = [a.headers["X-Request-Id"] for a in answers]
    for request_id in ids:
        small_gw.access_lines(request_id=request_id)  # wait for each one's batch
    worker_of = {line.get("request_id"): line["worker"] for line in small_gw.access_lines()}
    workers = [worker_of.get(request_id) for request_id in ids]
    assert None not in workers and workers[0::2] != workers[1::2]
    assert len(set(workers[0::2])) == len(set(workers[1::2])) == 1  # one worker each

    # A valid credential from the throttled address is refused too, before it is looked at.
    before = upstream.count()
    throttled = call(requests, small_gw, client, **{"X-API-Key": GOOD_KEY})
    assert throttled.status_code == 429
    assert upstream.count() == before
    # Other addresses and routes that check no credential are not affected.
    assert call(requests, small_gw, "198.51.100.8", **{"X-API-Key": GOOD_KEY}).status_code == 200
    assert call(requests, small_gw, client, "/open/x").status_code == 200

    time.sleep(int(throttled.headers["Retry-After"]) + 0.2)
    admitted = call(requests, small_gw, client, **{"X-API-Key": GOOD_KEY})
    assert admitted.status_code == 200
    assert upstream.last().header("X-User-Id") == "acme"


def test_what_counts_as_a_failure(small_gw: GatewayProcess) -> None:
    """Missing credentials and expired (well-signed) tokens guess nothing; bad tokens do."""
    client = "192.0.2.44"
    expired = mint_hs256(SECRET, claims(ttl=-3600))
    for _ in range(8):
        assert call(requests, small_gw, client).status_code == 401
        assert (
            call(requests, small_gw, client, Authorization=f"Bearer {expired}").status_code == 401
        )
    assert call(requests, small_gw, client, **{"X-API-Key": GOOD_KEY}).status_code == 200
    forged = mint_hs256("another-secret-" + "z" * 32, claims())
    statuses = [
        call(requests, small_gw, client, Authorization=f"Bearer {forged}").status_code
        for _ in range(6)
    ]
    assert statuses == [401] * 5 + [429]


@pytest.fixture
def unthrottled_gw(upstream: Upstream) -> Iterator[GatewayProcess]:
    gw = start_gateway(config(upstream, failure_limit=None), workers=1)
    yield gw
    gw.stop()


def test_failure_limit_null_turns_the_throttle_off(unthrottled_gw: GatewayProcess) -> None:
    statuses = {
        call(requests, unthrottled_gw, "203.0.113.1", **bad_key(i)).status_code for i in range(30)
    }
    assert statuses == {401}


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(require_redis_server()).start()
    yield server
    server.close()


def test_two_hosts_sharing_redis_share_one_budget(
    upstream: Upstream, redis_server: RedisServer
) -> None:
    """With rate_limiting.backend on Redis, failures on one host count on the other."""
    settings = config(upstream, failure_limit={"limit": 4, "period": 60})
    settings["rate_limiting"] = {"backend": redis_server.url, "decision_timeout_ms": 200}
    hosts = [start_gateway(settings, workers=1) for _ in range(2)]
    try:
        statuses = [
            call(requests, hosts[i % 2], "203.0.113.77", **bad_key(i)).status_code for i in range(6)
        ]
    finally:
        for host in hosts:
            host.stop()
    assert statuses == [401] * 4 + [429] * 2
