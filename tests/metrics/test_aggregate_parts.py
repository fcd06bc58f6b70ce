"""Aggregate parts are upstream requests like any other: a real Prometheus scrape of gw's
/metrics counts them in their upstreams' series (via="aggregate", apart from proxied ones),
and the access line names the upstreams and targets they reached."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.metrics.scrape import scrape_settled, total, value
from tests.shaping.json_upstream import JsonUpstream, start_json_upstream
from tests.support.gateway import GatewayProcess, free_port, start_gateway

pytestmark = pytest.mark.integration

PARTS = ("users", "orders", "products")
COUNT = "gw_upstream_duration_seconds_count"


@pytest.fixture(scope="module")
def home() -> Iterator[tuple[GatewayProcess, dict[str, JsonUpstream]]]:
    """A seed 003 style /api/home over three real JSON upstreams, through 2 gunicorn workers."""
    servers = {name: start_json_upstream() for name in PARTS}
    dead = f"http://127.0.0.1:{free_port()}"
    config = {
        "upstreams": {
            name: {"targets": [f"http://127.0.0.1:{s.port}"]} for name, s in servers.items()
        }
        | {"dead": {"targets": [dead]}},
        "routes": [
            {"name": "users", "path": "/api/users/**", "upstream": "users", "strip_prefix": "/api"},
            {
                "name": "home",
                "path": "/api/home/{id}",
                "aggregate": {
                    "parts": [
                        {"key": "user", "upstream": "users", "path": "/users/{params.id}"},
                        {"key": "orders", "upstream": "orders", "path": "/orders?user={params.id}"},
                        {"key": "picks", "upstream": "products", "path": "/r/{params.id}"},
                    ]
                },
            },
            {
                "name": "degraded",
                "path": "/api/degraded/{id}",
                "aggregate": {
                    "parts": [
                        {"key": "user", "upstream": "users", "path": "/users/{params.id}"},
                        {"key": "picks", "upstream": "dead", "path": "/r", "required": False},
                    ]
                },
            },
        ],
    }
    gw = start_gateway(config, workers=2)
    try:
        yield gw, servers
    finally:
        gw.stop()
        for server in servers.values():
            server.close()


def test_sixteen_home_requests_count_sixteen_in_each_parts_upstream_series(
    home: tuple[GatewayProcess, dict[str, JsonUpstream]],
) -> None:
    gw, servers = home
    before = _scrape(gw)
    calls = [len(servers[name].requests()) for name in PARTS]
    for i in range(16):
        assert requests.get(f"{gw.url}/api/home/{i}", timeout=10).status_code == 200
    for i in range(3):
        assert requests.get(f"{gw.url}/api/users/{i}", timeout=10).status_code == 200
    for i in range(2):
        assert requests.get(f"{gw.url}/api/degraded/{i}", timeout=10).status_code == 200

    after = _scrape(gw)

    def grew(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    for name in PARTS:
        assert grew(COUNT, upstream=name, via="aggregate") == 16 + 2 * (name == "users")
    assert grew(COUNT, upstream="users", via="proxy") == 3
    assert value(after, COUNT, upstream="orders", via="proxy") is None
    assert grew("gw_upstream_errors_total", upstream="dead", via="aggregate") == 2
    sent = [len(servers[name].requests()) - n for name, n in zip(PARTS, calls, strict=True)]
    assert sent == [16 + 3 + 2, 16, 16]


def _scrape(gw: GatewayProcess) -> dict[Any, float]:
    """A Prometheus scrape of the gateway's /metrics, parsed, once every worker's counts are
    in."""
    return scrape_settled(f"{gw.url}/metrics")


def test_the_access_line_names_the_parts_upstreams_and_targets(
    home: tuple[GatewayProcess, dict[str, JsonUpstream]],
) -> None:
    gw, servers = home
    assert requests.get(f"{gw.url}/api/home/42", timeout=10).status_code == 200
    line = next(
        entry
        for entry in reversed(gw.access_lines(path="/api/home/42"))
        if entry.get("path") == "/api/home/42"
    )
    urls = [f"http://127.0.0.1:{servers[name].port}" for name in PARTS]
    assert line["upstream"] == "users,orders,products"
    assert sorted(line["target"].split(",")) == sorted(urls)
    parts = {part["key"]: part for part in line["parts"]}
    assert [parts[key]["upstream"] for key in ("user", "orders", "picks")] == list(PARTS)
    assert all(part["status"] == 200 and part["duration_ms"] >= 0 for part in parts.values())


def test_a_failed_part_is_in_the_access_line_with_its_error(
    home: tuple[GatewayProcess, dict[str, JsonUpstream]],
) -> None:
    gw, _ = home
    assert requests.get(f"{gw.url}/api/degraded/9", timeout=10).status_code == 200
    line = next(
        entry
        for entry in reversed(gw.access_lines(path="/api/degraded/9"))
        if entry.get("path") == "/api/degraded/9"
    )
    assert line["upstream"] == "users,dead"
    dead = next(part for part in line["parts"] if part["key"] == "picks")
    assert dead["status"] is None and dead["target"] is None
    assert dead["error"] in ("upstream_unavailable", "no_healthy_target")
