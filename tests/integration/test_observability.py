"""Prometheus metrics that add up across workers, and W3C trace context end to end."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.gateway import GatewayProcess, free_port
from tests.support.upstream import Upstream, wait_for

Start = Callable[..., GatewayProcess]
TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def by_route(gw: GatewayProcess) -> dict[str, float]:
    """``gw_requests_total`` by route, as a scrape shows it now."""
    text = requests.get(f"{gw.url}/metrics", timeout=5).text
    counted: dict[str, float] = {}
    for labels, value in samples(text, "gw_requests_total").items():
        route = dict(labels)["route"]
        counted[route] = counted.get(route, 0) + value
    return counted


def test_scrape_adds_up_across_workers_including_a_killed_one(
    gateway: Start, upstream: Upstream
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    gw = gateway(
        {
            "upstreams": {"svc": {"targets": [upstream.url]}, "gone": {"targets": [dead]}},
            "routes": [
                {"name": "api", "path": "/api/**", "upstream": "svc"},
                {"name": "broken", "path": "/broken/**", "upstream": "gone"},
            ],
            "rate_limiting": {"default": {"requests_per_minute": 1000, "key": "route"}},
        },
        workers=3,
    )
    session = requests.Session()
    for i in range(60):
        assert session.get(f"{gw.url}/api/{i}", timeout=5).status_code == 200
    broken = [session.get(f"{gw.url}/broken/x", timeout=5).status_code for _ in range(5)]
    assert broken[0] == 502 and broken[-1] == 503  # refused, then the dead target is ejected
    for _ in range(4):
        assert session.get(f"{gw.url}/nowhere", timeout=5).status_code == 404
    # Every worker writes its counts within 0.1 s; SIGKILL loses at most that much, so the
    # kill comes once a scrape shows them (what it tests is that they outlive the worker).
    assert wait_for(lambda: by_route(gw).get("api") == 60 and by_route(gw).get("broken") == 5)
    os.kill(gw.worker_pids()[0], signal.SIGKILL)
    assert wait_for(lambda: len(gw.worker_pids()) == 3, timeout=15)
    for i in range(30):
        assert requests.get(f"{gw.url}/api/{i}", timeout=5).status_code == 200

    wait_for(lambda: by_route(gw).get("api") == 90, timeout=5)
    text = requests.get(f"{gw.url}/metrics", timeout=5).text
    counted = by_route(gw)
    assert counted["api"] == 90
    assert counted["broken"] == 5
    assert counted["(none)"] >= 4  # the 404s (and the health checks of the test harness)
    errors = samples(text, "gw_upstream_errors_total")
    unavailable = errors[(("kind", "upstream_unavailable"), ("upstream", "gone"), ("via", "proxy"))]
    ejected = errors[(("kind", "no_healthy_target"), ("upstream", "gone"), ("via", "proxy"))]
    assert unavailable + ejected == 5 and ejected >= 1
    decisions = samples(text, "gw_ratelimit_decisions_total")
    assert sum(v for k, v in decisions.items() if ("decision", "allowed") in k) == 95
    assert "/api/1" not in text  # labels are route names, never raw paths


def test_metrics_are_not_served_to_peers_outside_allow_from(
    gateway: Start, upstream: Upstream
) -> None:
    gw = gateway(
        {
            "upstreams": {"svc": {"targets": [upstream.url]}},
            "routes": [{"path": "/**", "upstream": "svc"}],
            "metrics": {"allow_from": ["10.9.9.9/32"]},
        }
    )
    response = requests.get(f"{gw.url}/metrics", timeout=5)
    assert response.status_code == 404
    assert response.json()["error"] == "route_not_found"
    assert upstream.count() == 0


def test_traceparent_is_continued_and_logged(gateway: Start, upstream: Upstream) -> None:
    gw = gateway(
        {
            "upstreams": {"svc": {"targets": [upstream.url]}},
            "routes": [{"path": "/**", "upstream": "svc"}],
        }
    )
    requests.get(f"{gw.url}/x", headers={"traceparent": TRACE, "tracestate": "vendor=1"}, timeout=5)
    sent = upstream.last()
    forwarded = sent.header("traceparent")
    assert forwarded is not None and forwarded.startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    assert forwarded != TRACE  # a new parent id for the gateway's hop
    assert sent.header("tracestate") == "vendor=1"
    requests.get(f"{gw.url}/y", headers={"traceparent": "garbage"}, timeout=5)
    started = upstream.last().header("traceparent")
    assert started is not None and len(started) == 55 and "garbage" not in started
    [line] = [entry for entry in gw.access_lines(path="/x") if entry["path"] == "/x"]
    assert line["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
