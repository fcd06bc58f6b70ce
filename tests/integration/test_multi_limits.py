"""Several limits on one request are decided together, through real gunicorn workers.

A request admitted by every limit takes one token from each; a request refused by any limit
takes none; the order of the limits in the file never changes the outcome. Run on the host's
shared table (two workers) and on a real redis-server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from gw.auth import hash_api_key
from tests.fixtures.redis_cluster import RedisCluster, session_cluster
from tests.fixtures.redis_server import RedisServer, require_redis_server
from tests.support.gateway import GatewayProcess
from tests.support.tokens import AUDIENCE, ISSUER, SECRET, claims, mint_hs256
from tests.support.upstream import Upstream

Start = Callable[..., GatewayProcess]

PER_IP = {"name": "per-ip", "requests_per_minute": 5, "key": "client_ip"}
PER_USER = {"name": "per-user", "requests_per_minute": 1, "key": "user"}
ORDERS = {"ip first": [PER_IP, PER_USER], "user first": [PER_USER, PER_IP]}


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisCluster]:
    yield from session_cluster()


@pytest.fixture(params=["shared", "redis", "redis-cluster"])
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """The limiter backend: the host's shared table, a real redis-server, or a real
    three-node Redis Cluster (where the per-IP and per-user keys sit in different slots)."""
    if request.param == "shared":
        yield "shared"
    elif request.param == "redis":
        server = RedisServer(require_redis_server()).start()
        yield server.url
        server.close()
    else:
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        cluster.flush()
        yield cluster.url


def multi_config(upstream: Upstream, limits: list[dict[str, Any]], backend: str) -> dict[str, Any]:
    return {
        "upstreams": {"svc": {"targets": [upstream.url], "read_timeout": 5}},
        "routes": [{"name": "api", "path": "/api/**", "upstream": "svc"}],
        "auth": {"type": "jwt", "issuer": ISSUER, "secret": SECRET, "audiences": [AUDIENCE]},
        "rate_limiting": {
            "backend": backend,
            "decision_timeout_ms": 500,
            "on_error": "fail_closed",
            "overrides": [{"path": "/api/**", "limits": limits}],
        },
    }


def as_user(gw: GatewayProcess, subject: str) -> requests.Response:
    token = mint_hs256(SECRET, claims(sub=subject))
    return requests.get(f"{gw.url}/api/x", headers={"Authorization": f"Bearer {token}"}, timeout=10)


@pytest.mark.parametrize("order", ORDERS)
def test_a_users_refused_requests_leave_the_shared_address_budget_alone(
    gateway: Start, upstream: Upstream, backend: str, order: str
) -> None:
    gw = gateway(multi_config(upstream, ORDERS[order], backend), workers=2)
    statuses = [as_user(gw, "alice").status_code for _ in range(5)]
    assert statuses == [200, 429, 429, 429, 429]
    # Alice's four refusals took nothing from the per-IP 5/min: Bob, behind the same
    # address, still gets through (he would be refused if they had).
    assert as_user(gw, "bob").status_code == 200
    assert as_user(gw, "carol").status_code == 200
    assert as_user(gw, "dave").status_code == 200
    fifth = as_user(gw, "erin")
    assert fifth.status_code == 200
    assert fifth.headers["X-RateLimit-Remaining"] == "0"
    refused = as_user(gw, "frank")
    assert refused.status_code == 429
    assert refused.headers["X-RateLimit-Limit"] == "5"  # the per-IP limit refused it
    assert upstream.count() == 5


@pytest.mark.parametrize("order", ORDERS)
def test_the_429_comes_from_the_limit_with_the_longest_wait(
    gateway: Start, upstream: Upstream, backend: str, order: str
) -> None:
    per_ip = {**PER_IP, "requests_per_minute": 2}  # one token every 30 s
    limits = [per_ip, PER_USER] if order == "ip first" else [PER_USER, per_ip]
    gw = gateway(multi_config(upstream, limits, backend), workers=2)
    assert as_user(gw, "alice").status_code == 200
    assert as_user(gw, "bob").status_code == 200  # the address's budget is now spent
    both = as_user(gw, "alice")  # refused by both: per-user waits ~60 s, per-IP ~30 s
    assert both.status_code == 429
    assert both.headers["X-RateLimit-Limit"] == "1"
    assert 30 < int(both.headers["Retry-After"]) <= 60
    assert both.json()["retry_after"] == int(both.headers["Retry-After"])
    assert both.headers["RateLimit-Policy"] == '"per-user";q=1;w=60'
    only_ip = as_user(gw, "carol")  # refused by the per-IP limit alone
    assert only_ip.status_code == 429
    assert only_ip.headers["X-RateLimit-Limit"] == "2"
    assert 0 < int(only_ip.headers["Retry-After"]) <= 30
    assert upstream.count() == 2


# -- when_missing: what a limit does for callers without its key's part -----------------

API_KEY = "gw_live_" + "p" * 32


def api_key_config(upstream: Upstream, when_missing: str | None) -> dict[str, Any]:
    per_key: dict[str, Any] = {"name": "per-key", "requests_per_minute": 1, "key": "api_key"}
    if when_missing:
        per_key["when_missing"] = when_missing
    config = multi_config(upstream, [PER_IP, per_key], "shared")
    config["auth"]["type"] = "jwt_or_api_key"
    config["auth"]["api_keys"] = {
        "keys": [{"id": "partner-1", "sha256": hash_api_key(API_KEY), "consumer": "acme"}]
    }
    return config


def test_jwt_users_behind_one_address_share_no_api_key_bucket_with_skip(
    gateway: Start, upstream: Upstream
) -> None:
    gw = gateway(api_key_config(upstream, "skip"), workers=2)
    assert [as_user(gw, user).status_code for user in ("alice", "bob", "alice")] == [200] * 3
    partner = [
        requests.get(f"{gw.url}/api/x", headers={"X-API-Key": API_KEY}, timeout=10)
        for _ in range(2)
    ]
    assert [r.status_code for r in partner] == [200, 429]
    assert partner[1].headers["X-RateLimit-Limit"] == "1"
    assert upstream.count() == 4


def test_by_default_callers_without_an_api_key_share_their_addresss_bucket(
    gateway: Start, upstream: Upstream
) -> None:
    gw = gateway(api_key_config(upstream, None), workers=2)
    assert [as_user(gw, user).status_code for user in ("alice", "bob")] == [200, 429]


def test_reject_answers_callers_without_an_api_key_like_auth_does(
    gateway: Start, upstream: Upstream
) -> None:
    gw = gateway(api_key_config(upstream, "reject"), workers=2)
    refused = as_user(gw, "alice")
    assert refused.status_code == 401
    body = refused.json()
    assert body.pop("request_id") == refused.headers["X-Request-Id"]  # as auth's 401 has
    assert body == {
        "error": "unauthorized",
        "message": "this request needs an API key (rate limit 'per-key')",
    }
    assert refused.headers["WWW-Authenticate"] == 'Bearer realm="gw"'
    ok = requests.get(f"{gw.url}/api/x", headers={"X-API-Key": API_KEY}, timeout=10)
    assert ok.status_code == 200
    assert ok.headers["X-RateLimit-Limit"] == "1"  # per-key has fewer left than per-IP
    assert upstream.count() == 1
