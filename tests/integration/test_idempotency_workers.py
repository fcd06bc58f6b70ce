"""Idempotency-Key through real gunicorn (2 workers) and a real counting upstream, with the
records in the host's shared store and in a real redis-server: a retry never reaches the
upstream twice, whichever worker takes it."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from gw.auth import hash_api_key
from tests.fixtures.redis_server import RedisServer, require_redis_server
from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.upstream import Upstream, start_upstream, wait_for

KEYS = {"alice-key-" + "a" * 24: "alice", "bob-key-" + "b" * 26: "bob"}
ALICE, BOB = KEYS


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = start_upstream()
    server.delay = 0.3  # slow enough for concurrent duplicates to overlap
    yield server
    server.close()


@pytest.fixture(scope="module", params=["shared", "redis"])
def gw(request: pytest.FixtureRequest, upstream: Upstream) -> Iterator[GatewayProcess]:
    redis = None
    store: dict[str, object] = {"lock_timeout": 10}
    if request.param == "redis":
        require_redis_server()
        redis = RedisServer().start()
        store = {"backend": redis.url, "lock_timeout": 10, "redis_timeout": 1}
    keyed = {"ttl": "1h", "methods": ["POST"]}
    gateway = start_gateway(
        {
            "server": {"deadline": 10},
            "upstreams": {"svc": {"targets": [upstream.url]}},
            "auth": {
                "type": "api_key",
                "api_keys": {
                    "keys": [
                        {"id": user, "sha256": hash_api_key(key), "consumer": user}
                        for key, user in KEYS.items()
                    ]
                },
            },
            "idempotency_store": store,
            "routes": [
                {"name": "orders", "path": "/orders/**", "upstream": "svc", "idempotency": keyed},
                {
                    "name": "small",
                    "path": "/small/**",
                    "upstream": "svc",
                    "idempotency": {"max_body_bytes": 1000},
                },
                {
                    "name": "brief",
                    "path": "/brief/**",
                    "upstream": "svc",
                    "idempotency": {"ttl": "1s"},
                },
            ],
        },
        workers=2,
        threads=4,
    )
    yield gateway
    gateway.stop()
    if redis is not None:
        redis.close()


def reached(upstream: Upstream, path: str) -> int:
    """How many requests for ``path`` the upstream has received."""
    with upstream.lock:
        return sum(1 for r in upstream.received if r.target == path)


def post(
    gw: GatewayProcess, path: str, key: str, body: bytes, api_key: str = ALICE
) -> requests.Response:
    headers = {"Idempotency-Key": f'"{key}"', "X-API-Key": api_key}
    return requests.post(f"{gw.url}{path}", data=body, headers=headers, timeout=15)


def test_a_retry_gets_the_identical_answer_and_the_upstream_sees_one_request(
    gw: GatewayProcess, upstream: Upstream
) -> None:
    path, key = f"/orders/{uuid.uuid4()}", str(uuid.uuid4())
    answers = [post(gw, path, key, b'{"qty": 3}') for _ in range(4)]
    first = answers[0]
    assert first.status_code == 200 and "Idempotent-Replayed" not in first.headers
    for again in answers[1:]:
        assert again.status_code == 200
        assert again.content == first.content
        assert again.headers["Content-Type"] == first.headers["Content-Type"]
        assert again.headers["Idempotent-Replayed"] == "true"
    assert reached(upstream, path) == 1


def test_the_same_key_with_another_body_gets_422(gw: GatewayProcess, upstream: Upstream) -> None:
    path, key = f"/orders/{uuid.uuid4()}", str(uuid.uuid4())
    assert post(gw, path, key, b'{"qty": 1}').status_code == 200
    reused = post(gw, path, key, b'{"qty": 2}')
    assert reused.status_code == 422
    assert reused.json()["error"] == "idempotency_key_reused"
    assert reached(upstream, path) == 1


def test_concurrent_duplicates_reach_the_upstream_once(
    gw: GatewayProcess, upstream: Upstream
) -> None:
    path, key = f"/orders/{uuid.uuid4()}", str(uuid.uuid4())
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: post(gw, path, key, b"{}"), range(6)))
    assert [a.status_code for a in answers] == [200] * 6
    assert len({a.content for a in answers}) == 1
    assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == 5
    assert reached(upstream, path) == 1


def test_two_callers_with_the_same_key_are_independent(
    gw: GatewayProcess, upstream: Upstream
) -> None:
    path, key = f"/orders/{uuid.uuid4()}", str(uuid.uuid4())
    alice = post(gw, path, key, b"{}", ALICE)
    bob = post(gw, path, key, b"{}", BOB)
    assert '"X-User-Id", "alice"' in alice.text and '"X-User-Id", "bob"' in bob.text
    assert "Idempotent-Replayed" not in bob.headers
    assert reached(upstream, path) == 2


def test_after_the_ttl_the_key_reaches_the_upstream_again(
    gw: GatewayProcess, upstream: Upstream
) -> None:
    path, key = f"/brief/{uuid.uuid4()}", str(uuid.uuid4())
    post(gw, path, key, b"{}")
    assert post(gw, path, key, b"{}").headers["Idempotent-Replayed"] == "true"
    time.sleep(1.3)
    later = post(gw, path, key, b"{}")
    assert later.status_code == 200 and "Idempotent-Replayed" not in later.headers
    assert reached(upstream, path) == 2


def test_a_chunked_answer_within_max_body_bytes_is_stored(
    gw: GatewayProcess, upstream: Upstream
) -> None:
    path, key = f"/small/{uuid.uuid4()}/__bytes/900", str(uuid.uuid4())
    first, again = post(gw, path, key, b"{}"), post(gw, path, key, b"{}")
    assert first.content == again.content == b"x" * 900
    assert again.headers["Idempotent-Replayed"] == "true"
    assert reached(upstream, path) == 1


def test_a_chunked_answer_over_max_body_bytes_is_passed_whole_and_not_stored(
    gw: GatewayProcess, upstream: Upstream
) -> None:
    path, key = f"/small/{uuid.uuid4()}/__bytes/5000", str(uuid.uuid4())
    first, again = post(gw, path, key, b"{}"), post(gw, path, key, b"{}")
    assert first.content == again.content == b"x" * 5000
    assert "Idempotent-Replayed" not in again.headers
    assert reached(upstream, path) == 2


def test_the_outcomes_are_counted_in_the_metrics(gw: GatewayProcess) -> None:
    path, key = f"/orders/{uuid.uuid4()}", str(uuid.uuid4())
    post(gw, path, key, b"{}")
    post(gw, path, key, b"{}")
    assert post(gw, path, key, b"{ }").status_code == 422

    def counted() -> dict[str, float]:
        text = requests.get(f"{gw.url}/metrics", timeout=5).text
        return {
            outcome: float(value)
            for outcome, value in re.findall(
                r'^gw_idempotency_total\{outcome="(\w+)",route="orders"\} (\S+)$', text, re.M
            )
        }

    # Each worker publishes its counts within 0.1 s; the scrape may come to the other one.
    wanted = ("stored", "replayed", "conflict")
    wait_for(lambda: all(counted().get(outcome, 0) >= 1 for outcome in wanted), timeout=5)
    counts = counted()
    assert all(counts.get(outcome, 0) >= 1 for outcome in wanted), counts
