"""The proxy end to end: real gunicorn workers in front of real upstream servers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
import yaml

from tests.data.seeds import SEED_000, SEED_003_ROUTES, with_upstreams
from tests.support.gateway import GatewayProcess, free_port
from tests.support.rawhttp import get, raw_request
from tests.support.upstream import Upstream

Start = Callable[..., GatewayProcess]


def simple_config(upstream: Upstream, **upstream_settings: Any) -> dict[str, Any]:
    return {
        "upstreams": {"svc": {"targets": [upstream.url], **upstream_settings}},
        "routes": [
            {"name": "api", "path": "/api/**", "upstream": "svc", "strip_prefix": "/api"},
            {"name": "order", "path": "/api/orders/{id}", "methods": ["GET"], "upstream": "svc"},
        ],
    }


def test_seed_003_orders_route_reaches_upstream_with_prefix_stripped(
    gateway: Start, make_upstream: Callable[[], Upstream]
) -> None:
    users, orders, products = make_upstream(), make_upstream(), make_upstream()
    text = with_upstreams(
        SEED_003_ROUTES,
        {
            "http://users-service:3001": users.url,
            "http://orders-service:3002": orders.url,
            "http://products-service:3003": products.url,
        },
    )
    gw = gateway(text)
    response = requests.get(f"{gw.url}/api/orders/ord_x7k9", timeout=5)
    assert response.status_code == 200
    assert orders.last().method == "GET"
    assert orders.last().target == "/orders/ord_x7k9"
    assert users.count() == 0 and products.count() == 0
    # methods: orders allows GET and POST only
    assert requests.delete(f"{gw.url}/api/orders/ord_x7k9", timeout=5).status_code == 405


def test_seed_000_routes_users_to_users_server(
    gateway: Start, make_upstream: Callable[[], Upstream]
) -> None:
    users, orders = make_upstream(), make_upstream()
    text = with_upstreams(
        SEED_000, {"https://users.example.com": users.url, "https://orders.example.com": orders.url}
    )
    gw = gateway(text)
    assert requests.get(f"{gw.url}/api/users/42", timeout=5).status_code == 200
    assert users.last().target == "/api/users/42"
    assert orders.count() == 0
    # {.+} needs at least one segment, and seed 000 lists GET only
    assert requests.get(f"{gw.url}/api/users", timeout=5).status_code == 404
    response = requests.post(f"{gw.url}/api/users/42", timeout=5)
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD"


def test_404_and_405_are_json_with_request_id(gateway: Start, upstream: Upstream) -> None:
    gw = gateway(simple_config(upstream))
    missing = requests.get(f"{gw.url}/nowhere", timeout=5)
    assert missing.status_code == 404
    body = missing.json()
    assert body["error"] == "route_not_found"
    assert body["request_id"] == missing.headers["X-Request-Id"]
    wrong = requests.post(f"{gw.url}/api/orders/1", timeout=5)  # falls to /api/** (any method)
    assert wrong.status_code == 200
    assert upstream.count() == 1


def test_upstream_refusing_is_502_json(gateway: Start) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    gw = gateway(
        {"upstreams": {"svc": {"targets": [dead]}}, "routes": [{"path": "/**", "upstream": "svc"}]}
    )
    response = requests.get(f"{gw.url}/x", timeout=5)
    assert response.status_code == 502
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"] == "upstream_unavailable"


def test_hanging_upstream_is_504_within_its_timeout_plus_a_second(
    gateway: Start, upstream: Upstream
) -> None:
    gw = gateway(simple_config(upstream, read_timeout=1.5))
    started = time.monotonic()
    response = requests.get(f"{gw.url}/api/__hang", timeout=10)
    elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert response.json()["error"] == "upstream_timeout"
    assert 1.4 <= elapsed < 2.5


@pytest.mark.parametrize(
    ("path", "error"),
    [("/api/__garbage", "upstream_bad_response"), ("/api/__close", "upstream_unavailable")],
)
def test_malformed_or_silent_upstream_is_502_never_500(
    gateway: Start, upstream: Upstream, path: str, error: str
) -> None:
    gw = gateway(simple_config(upstream))
    response = requests.get(gw.url + path, timeout=5)
    assert response.status_code == 502
    assert response.json()["error"] == error


@pytest.mark.parametrize("path", ["/api/__truncate", "/api/__truncate_chunked"])
def test_upstream_dying_mid_body_leaves_client_with_a_broken_response(
    gateway: Start, upstream: Upstream, path: str
) -> None:
    gw = gateway(simple_config(upstream))
    response = get(gw.port, path)
    assert response.status == 200
    assert response.body.startswith(b"0123456789")
    assert not response.complete  # short of Content-Length, or no terminating chunk


def test_set_cookie_headers_stay_apart_and_redirects_pass_through(
    gateway: Start, upstream: Upstream
) -> None:
    gw = gateway(simple_config(upstream))
    cookies = get(gw.port, "/api/__cookies")
    assert cookies.all("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]
    redirect = get(gw.port, "/api/__redirect")
    assert redirect.status == 302
    assert redirect.header("Location") == "/elsewhere"
    assert upstream.count() == 2  # the redirect was not followed


def test_compressed_body_passes_through_untouched(gateway: Start, upstream: Upstream) -> None:
    import gzip

    gw = gateway(simple_config(upstream))
    response = get(gw.port, "/api/__gzip", {"Accept-Encoding": "gzip"})
    assert response.header("Content-Encoding") == "gzip"
    assert gzip.decompress(response.body) == b'{"compressed": true}' * 50


def test_query_string_passes_byte_for_byte(gateway: Start, upstream: Upstream) -> None:
    gw = gateway(simple_config(upstream))
    query = "b=%2F..%2f&a=1&a=2&empty=&%7E=x+y&plus=%2B"
    assert get(gw.port, f"/api/search?{query}").status == 200
    assert upstream.last().target == f"/search?{query}"


def test_hop_by_hop_and_identity_headers_never_reach_upstream(
    gateway: Start, upstream: Upstream
) -> None:
    gw = gateway(simple_config(upstream))
    request = (
        b"GET /api/x HTTP/1.1\r\nHost: gw.test\r\n"
        b"Connection: close, X-Secret-Hop\r\nX-Secret-Hop: 1\r\nKeep-Alive: timeout=5\r\n"
        b"X-User-Id: admin\r\nX-User-Role: admin\r\nX.User.Id: admin\r\n"
        b"Proxy-Authorization: Basic Zm9vOmJhcg==\r\nTE: trailers\r\nX-Kept: yes\r\n\r\n"
    )
    assert raw_request(gw.port, request).status == 200
    names = upstream.last().header_names()
    assert "x-kept" in names
    for dropped in (
        "x-secret-hop",
        "keep-alive",
        "x-user-id",
        "x-user-role",
        "x.user.id",
        "proxy-authorization",
        "te",
        "connection",
    ):
        assert dropped not in names, dropped


def test_request_id_is_honoured_when_well_formed_and_minted_otherwise(
    gateway: Start, upstream: Upstream
) -> None:
    gw = gateway(simple_config(upstream))
    honoured = get(gw.port, "/api/x", {"X-Request-Id": "req_abc123-from-client"})
    assert honoured.header("X-Request-Id") == "req_abc123-from-client"
    assert upstream.last().header("X-Request-Id") == "req_abc123-from-client"
    forged = get(gw.port, "/api/x", {"X-Request-Id": "bad id\twith junk"})
    minted = forged.header("X-Request-Id")
    assert minted and minted.startswith("req_") and minted != "bad id\twith junk"
    assert upstream.last().header("X-Request-Id") == minted


def test_forwarded_headers_come_from_trusted_information_only(
    gateway: Start, upstream: Upstream
) -> None:
    gw = gateway(simple_config(upstream))  # by default only unix-socket peers are proxies
    get(
        gw.port,
        "/api/x",
        {"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https", "X-Real-IP": "6.6.6.6"},
    )
    seen = upstream.last()
    assert seen.header("X-Forwarded-For") == "127.0.0.1"
    assert seen.header("X-Real-IP") == "127.0.0.1"
    assert seen.header("X-Forwarded-Proto") == "http"
    assert seen.header("X-Forwarded-Host") == "gw.test"
    assert seen.header("Host") == f"127.0.0.1:{upstream.port}"


def test_forwarded_for_from_a_trusted_proxy_names_the_right_most_untrusted_hop(
    gateway: Start, upstream: Upstream
) -> None:
    config = simple_config(upstream)
    config["server"] = {"trusted_proxies": ["127.0.0.1/32"]}  # as if the client were a proxy
    gw = gateway(config)
    get(
        gw.port, "/api/x", {"X-Forwarded-For": "6.6.6.6, 203.0.113.9", "X-Forwarded-Proto": "https"}
    )
    seen = upstream.last()
    assert seen.header("X-Real-IP") == "203.0.113.9"
    assert seen.header("X-Forwarded-For") == "6.6.6.6, 203.0.113.9, 127.0.0.1"
    assert seen.header("X-Forwarded-Proto") == "https"
    [line] = [line for line in gw.access_lines(path="/api/x") if line["path"] == "/api/x"]
    assert line["client"] == "203.0.113.9"


def test_head_and_bodiless_statuses(gateway: Start, upstream: Upstream) -> None:
    gw = gateway(simple_config(upstream))
    head = get(gw.port, "/api/x", method="HEAD")
    assert head.status == 200 and head.body == b""
    assert upstream.last().method == "HEAD"
    assert get(gw.port, "/api/__status/204").status == 204


def test_uploads_stream_with_content_length_and_chunked(gateway: Start, upstream: Upstream) -> None:
    import hashlib

    gw = gateway(simple_config(upstream))
    payload = bytes(range(256)) * 4096  # 1 MiB
    fixed = requests.post(f"{gw.url}/api/up", data=payload, timeout=10).json()
    assert fixed["body_len"] == len(payload)
    assert fixed["body_sha256"] == hashlib.sha256(payload).hexdigest()
    chunks = [payload[i : i + 100_000] for i in range(0, len(payload), 100_000)]
    chunked = requests.post(f"{gw.url}/api/up", data=iter(chunks), timeout=10).json()
    assert chunked["body_len"] == len(payload)
    assert chunked["body_sha256"] == hashlib.sha256(payload).hexdigest()
    assert ["Transfer-Encoding", "chunked"] in chunked["headers"]


def test_body_limit_holds_for_content_length_and_chunked(
    gateway: Start, upstream: Upstream
) -> None:
    config = simple_config(upstream)
    config["server"] = {"max_body_bytes": 1000}
    gw = gateway(config)
    declared = requests.post(f"{gw.url}/api/up", data=b"x" * 1001, timeout=10)
    assert declared.status_code == 413
    assert declared.json()["error"] == "body_too_large"
    assert upstream.count() == 0
    assert requests.post(f"{gw.url}/api/up", data=b"x" * 1000, timeout=10).status_code == 200
    streamed = requests.post(f"{gw.url}/api/up", data=iter([b"x" * 600, b"y" * 600]), timeout=10)
    assert streamed.status_code == 413


def test_unparseable_requests_get_json_errors_from_gunicorn_layer(
    gateway: Start, upstream: Upstream
) -> None:
    gw = gateway(simple_config(upstream))
    response = raw_request(gw.port, b"GET /api/x HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n")
    assert response.status == 400
    assert response.header("Content-Type") == "application/json"
    assert response.json()["error"] == "bad_request"
    assert upstream.count() == 0


def test_health_and_readiness(gateway: Start, upstream: Upstream) -> None:
    gw = gateway(simple_config(upstream))
    health = requests.get(f"{gw.url}/health", timeout=5)
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "healthy" and body["version"] and "T" in body["timestamp"]
    assert requests.get(f"{gw.url}/ready", timeout=5).json()["status"] == "ready"
    assert upstream.count() == 0


def test_access_log_has_one_json_line_per_request(gateway: Start, upstream: Upstream) -> None:
    gw = gateway(simple_config(upstream))
    response = requests.get(f"{gw.url}/api/orders/7?q=1", timeout=5)
    rid = response.headers["X-Request-Id"]
    [line] = [line for line in gw.access_lines(request_id=rid) if line["request_id"] == rid]
    assert line["method"] == "GET"
    assert line["path"] == "/api/orders/7"
    assert line["route"] == "order"
    assert line["upstream"] == "svc"
    assert line["status"] == 200
    assert line["bytes"] == len(response.content)
    assert line["client"] == "127.0.0.1"
    assert line["duration_ms"] > 0


def test_invalid_config_refuses_to_start_and_names_the_location(gateway: Start) -> None:
    bad = yaml.safe_dump(
        {
            "upstreams": {"orders": {"targets": ["http://127.0.0.1:1"]}},
            "routes": [{"path": "/a", "upstream": "orderz"}],
        }
    )
    gw = gateway(bad, wait=False)
    assert gw.proc.wait(timeout=20) != 0
    assert "routes[0].upstream: no upstream named 'orderz' (known: orders)" in gw.log_text()
    json.dumps(None)


def test_header_count_and_size_limits_answer_431_as_json(
    gateway: Start, upstream: Upstream
) -> None:
    gw = gateway(simple_config(upstream))
    many = "".join(f"X-Filler-{i}: {i}\r\n" for i in range(120))
    too_many = raw_request(gw.port, f"GET /api/x HTTP/1.1\r\nHost: a\r\n{many}\r\n".encode())
    assert too_many.status == 431
    assert too_many.json()["error"] == "headers_too_large"
    huge = "X-Big: " + "y" * 9000
    too_large = raw_request(gw.port, f"GET /api/x HTTP/1.1\r\nHost: a\r\n{huge}\r\n\r\n".encode())
    assert too_large.status == 431
    assert upstream.count() == 0


WORKERS = ["gw.edge.worker.BalancedGeventWorker", "gw.edge.worker.BalancedThreadWorker", "sync"]


@pytest.mark.parametrize("worker_class", WORKERS)
def test_trace_and_connect_reach_only_a_route_that_names_them(
    gateway: Start, upstream: Upstream, worker_class: str
) -> None:
    config = {
        "upstreams": {"svc": {"targets": [upstream.url]}},
        "routes": [
            {"name": "any", "path": "/x/**", "upstream": "svc"},
            {"name": "traced", "path": "/t/**", "upstream": "svc", "methods": ["TRACE"]},
        ],
    }
    gw = gateway(config, workers=1, worker_class=worker_class)
    for method in ("TRACE", "CONNECT"):
        refused = get(gw.port, "/x/a", {"Authorization": "Bearer secret"}, method=method)
        assert refused.status == 405, refused
        assert refused.header("Allow") == "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"
        assert refused.json()["error"] == "method_not_allowed"
        assert b"secret" not in refused.body
    assert upstream.count() == 0
    assert get(gw.port, "/x/a", method="DELETE").status == 200
    traced = get(gw.port, "/t/a", method="TRACE")
    assert traced.status == 200 and upstream.last().method == "TRACE"
    assert upstream.count() == 2
