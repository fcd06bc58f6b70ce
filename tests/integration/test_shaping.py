"""Composition, transformation and compression through real gunicorn and real upstreams."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread
from typing import Any

import pytest
import requests

from tests.data.seeds import SEED_003_TRANSFORMATIONS
from tests.support.gateway import GatewayProcess, free_port, start_gateway

USER = {
    "id": "usr_8a3f",
    "name": "Alice Chen",
    "email_address": "alice@example.com",
    "internal_id": 91823,
    "db_shard": "users-03",
    "feature_flags": {"beta": True},
    "created_by_admin": False,
}
ORDERS = [{"order_id": "ord_x7k9", "status": "shipped", "total": 49.98}]
PRODUCTS = [{"product_id": "prod_k3j7", "name": "Wireless Keyboard Pro", "score": 0.94}]


class SlowJson(ThreadingHTTPServer):
    """A JSON upstream that answers after ``delay`` seconds and counts its calls."""

    daemon_threads = True

    def __init__(self, payload: Any, delay: float = 0.0) -> None:
        self.payload, self.delay, self.calls = payload, delay, 0
        self.paths: list[str] = []
        super().__init__(("127.0.0.1", 0), _Handler)
        Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # keep-alive: head and body are two writes
    server: SlowJson

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.calls += 1
        self.server.paths.append(self.path)
        time.sleep(self.server.delay)
        body = json.dumps(self.server.payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def shaped() -> Iterator[tuple[GatewayProcess, dict[str, SlowJson]]]:
    servers = {
        "users": SlowJson(USER, 0.2),
        "orders": SlowJson(ORDERS, 0.2),
        "products": SlowJson(PRODUCTS, 0.2),
        "big": SlowJson({"items": [{"n": i, "text": "lorem ipsum " * 5} for i in range(400)]}),
    }
    dead = f"http://127.0.0.1:{free_port()}"
    config = {
        "upstreams": {name: {"targets": [s.url]} for name, s in servers.items()}
        | {"dead": {"targets": [dead]}},
        "routes": [
            {"name": "users", "path": "/api/users/**", "upstream": "users", "strip_prefix": "/api"},
            {"name": "big", "path": "/big", "upstream": "big"},
            {
                "name": "home",
                "path": "/api/home/{id}",
                "methods": ["GET"],
                "aggregate": {
                    "parts": [
                        {"key": "user", "upstream": "users", "path": "/users/{params.id}"},
                        {
                            "key": "recent_orders",
                            "upstream": "orders",
                            "path": "/orders?user={params.id}&limit={query.limit:-3}",
                        },
                        {
                            "key": "recommendations",
                            "upstream": "products",
                            "path": "/recommendations/{params.id}",
                            "required": False,
                        },
                    ]
                },
            },
            {
                "name": "home-degraded",
                "path": "/api/degraded/{id}",
                "aggregate": {
                    "parts": [
                        {"key": "user", "upstream": "users", "path": "/users/{params.id}"},
                        {
                            "key": "recommendations",
                            "upstream": "dead",
                            "path": "/r",
                            "required": False,
                        },
                    ]
                },
            },
            {
                "name": "home-broken",
                "path": "/api/broken/{id}",
                "aggregate": {
                    "parts": [{"key": "user", "upstream": "dead", "path": "/users/{params.id}"}]
                },
            },
        ],
        "compression": {"min_bytes": 1024, "level": 6},
        **json.loads(SEED_003_TRANSFORMATIONS),
    }
    gw = start_gateway(config, workers=2)
    yield gw, servers
    gw.stop()
    for server in servers.values():
        server.shutdown()


def test_aggregate_merges_in_config_order_in_the_time_of_the_slowest_part(
    shaped: tuple[GatewayProcess, dict[str, SlowJson]],
) -> None:
    gw, servers = shaped
    requests.get(f"{gw.url}/api/home/usr_8a3f", timeout=5)  # warm the pools
    started = time.monotonic()
    response = requests.get(f"{gw.url}/api/home/usr_8a3f?limit=2", timeout=5)
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    document = response.json()
    assert list(document) == ["user", "recent_orders", "recommendations"]
    assert document["recent_orders"] == ORDERS
    assert elapsed < 0.45, elapsed  # three 200 ms parts in parallel, not 600 ms in a row
    assert servers["orders"].paths[-1] == "/orders?user=usr_8a3f&limit=2"
    assert "X-Gateway-Missing-Parts" not in response.headers


def test_optional_part_down_gives_null_and_says_so(
    shaped: tuple[GatewayProcess, dict[str, SlowJson]],
) -> None:
    gw, _ = shaped
    response = requests.get(f"{gw.url}/api/degraded/usr_8a3f", timeout=5)
    assert response.status_code == 200
    document = response.json()
    assert document["recommendations"] is None
    assert document["_missing"] == ["recommendations"]
    assert response.headers["X-Gateway-Missing-Parts"] == "recommendations"


def test_required_part_down_fails_the_route(
    shaped: tuple[GatewayProcess, dict[str, SlowJson]],
) -> None:
    gw, _ = shaped
    response = requests.get(f"{gw.url}/api/broken/usr_8a3f", timeout=5)
    assert response.status_code == 502
    assert response.json()["error"] == "upstream_unavailable"
    assert "user" in response.json()["message"]


def test_seed_003_transformation_removes_and_renames_fields(
    shaped: tuple[GatewayProcess, dict[str, SlowJson]],
) -> None:
    gw, _ = shaped
    response = requests.get(f"{gw.url}/api/users/usr_8a3f", timeout=5)
    body = response.json()
    for removed in ("internal_id", "db_shard", "feature_flags", "created_by_admin"):
        assert removed not in body
    assert body["email"] == "alice@example.com" and "email_address" not in body
    assert int(response.headers["Content-Length"]) == len(response.content)


def test_large_json_is_gzipped_and_decompresses_to_the_original(
    shaped: tuple[GatewayProcess, dict[str, SlowJson]],
) -> None:
    gw, servers = shaped
    original = json.dumps(servers["big"].payload).encode()
    response = requests.get(
        f"{gw.url}/big", headers={"Accept-Encoding": "gzip"}, timeout=5, stream=True
    )
    raw = response.raw.read(decode_content=False)
    assert response.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in response.headers["Vary"]
    assert len(raw) < len(original) / 4
    assert gzip.decompress(raw) == original
    plain = requests.get(f"{gw.url}/big", headers={"Accept-Encoding": "identity"}, timeout=5)
    assert "Content-Encoding" not in plain.headers and plain.content == original


def test_small_responses_are_not_compressed(
    shaped: tuple[GatewayProcess, dict[str, SlowJson]],
) -> None:
    gw, _ = shaped
    response = requests.get(
        f"{gw.url}/api/degraded/usr_8a3f",
        headers={"Accept-Encoding": "gzip"},
        timeout=5,
        stream=True,
    )
    assert "Content-Encoding" not in response.headers
