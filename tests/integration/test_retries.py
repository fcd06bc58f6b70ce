"""Retries through real gunicorn: the upstream-side counts prove nothing runs twice unsafely."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import requests

from tests.support.gateway import GatewayProcess, free_port
from tests.support.upstream import Upstream

Start = Callable[..., GatewayProcess]


def two_targets(first: str, second: str, **retries: Any) -> dict[str, Any]:
    return {
        "upstreams": {"svc": {"targets": [first, second], "read_timeout": 1, "retries": retries}},
        "routes": [{"path": "/**", "upstream": "svc"}],
    }


def test_refused_target_is_retried_on_the_next_one_for_any_method(
    gateway: Start, upstream: Upstream
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    gw = gateway(two_targets(dead, upstream.url), workers=1)
    gets = [requests.get(f"{gw.url}/x", timeout=5).status_code for _ in range(6)]
    posts = [requests.post(f"{gw.url}/x", data=b"body", timeout=5).status_code for _ in range(6)]
    assert gets == [200] * 6 and posts == [200] * 6
    assert upstream.count() == 12
    assert all(r.body_len == 4 for r in upstream.received if r.method == "POST")


def test_503_is_retried_for_get_but_never_for_post(
    gateway: Start, make_upstream: Callable[[], Upstream]
) -> None:
    failing, healthy = make_upstream(), make_upstream()
    failing.force_status = 503
    gw = gateway(two_targets(failing.url, healthy.url, attempts=2, retry_on=["status"]), workers=1)
    gets = [requests.get(f"{gw.url}/x", timeout=5).status_code for _ in range(4)]
    assert gets == [200] * 4
    posts = [requests.post(f"{gw.url}/x", data=b"b", timeout=5).status_code for _ in range(4)]
    assert sorted(posts) == [200, 200, 503, 503]  # round robin: half land on the failing target
    post_runs = sum(1 for r in failing.received + healthy.received if r.method == "POST")
    assert post_runs == 4  # every POST ran exactly once


def test_upstream_retry_after_is_respected_or_passed_through(
    gateway: Start, make_upstream: Callable[[], Upstream]
) -> None:
    failing, healthy = make_upstream(), make_upstream()
    failing.force_status = 503
    failing.force_headers = [("Retry-After", "1")]
    gw = gateway(two_targets(failing.url, healthy.url, retry_on=["status"]), workers=1)
    took = []
    for _ in range(3):
        started = time.monotonic()
        assert requests.get(f"{gw.url}/x", timeout=5).status_code == 200
        took.append(time.monotonic() - started)
    assert failing.count() >= 1
    assert max(took) >= 0.9  # a request that met the failing target waited its Retry-After
    alone = gateway(
        {
            "upstreams": {"svc": {"targets": [failing.url], "retries": {"retry_on": ["status"]}}},
            "routes": [{"path": "/**", "upstream": "svc"}],
        },
        workers=1,
    )
    failing.force_headers = [("Retry-After", "120")]
    started = time.monotonic()
    refused = requests.get(f"{alone.url}/x", timeout=5)
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "120"
    assert time.monotonic() - started < 0.5  # too long to wait for: passed on at once


def test_timeout_retried_for_get_and_not_for_post(
    gateway: Start, make_upstream: Callable[[], Upstream]
) -> None:
    slow, healthy = make_upstream(), make_upstream()
    slow.delay = 3
    gw = gateway(two_targets(slow.url, healthy.url, retry_on=["timeout"]), workers=1)
    assert [requests.get(f"{gw.url}/x", timeout=10).status_code for _ in range(2)] == [200, 200]
    posts = [requests.post(f"{gw.url}/x", data=b"b", timeout=10).status_code for _ in range(2)]
    assert sorted(posts) == [200, 504]
    assert sum(1 for r in slow.received + healthy.received if r.method == "POST") == 2


def test_retry_budget_bounds_the_load_of_an_outage(
    gateway: Start, make_upstream: Callable[[], Upstream]
) -> None:
    first, second = make_upstream(), make_upstream()
    first.force_status = second.force_status = 503
    config = two_targets(
        first.url,
        second.url,
        attempts=5,
        retry_on=["status"],
        backoff=0,
        budget_ratio=0.1,
        budget_min_per_second=0.5,
    )
    # Passive ejection would take both failing targets out after 5 failures each and answer
    # 503 without calling them; turn it off to see what the budget alone does.
    config["upstreams"]["svc"]["passive"] = {"failure_statuses": []}
    gw = gateway(config, workers=1)
    sent = 100
    for _ in range(sent):
        assert requests.get(f"{gw.url}/x", timeout=5).status_code == 503
    attempts = first.count() + second.count()
    # Without a budget: 500 attempts. With it: 100 + 10 % of 100 + 0.5/s x 10 s = 115 at most.
    assert sent < attempts <= 115
    assert "retry budget of upstream svc is used up" in gw.log_text()
