"""CORS answered at the edge, and the security headers seed 002 asks for."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.upstream import Upstream, start_upstream

APP = "https://app.example.com"


@pytest.fixture(scope="module")
def edge() -> Iterator[tuple[GatewayProcess, Upstream]]:
    upstream = start_upstream()
    gw = start_gateway(
        {
            "upstreams": {"svc": {"targets": [upstream.url]}},
            "cors": {"allowed_origins": [APP], "allow_credentials": True},
            "routes": [
                {"name": "api", "path": "/api/**", "upstream": "svc"},
                {
                    "name": "public",
                    "path": "/public/**",
                    "upstream": "svc",
                    "methods": ["GET"],
                    "cors": {"allowed_origins": ["*"]},
                },
                {"name": "headers", "path": "/own/**", "upstream": "svc"},
            ],
        },
        workers=1,
    )
    yield gw, upstream
    gw.stop()
    upstream.close()


def preflight(
    gw: GatewayProcess, path: str, origin: str, method: str, headers: str = ""
) -> requests.Response:
    extra = {"Access-Control-Request-Headers": headers} if headers else {}
    return requests.options(
        gw.url + path,
        headers={"Origin": origin, "Access-Control-Request-Method": method, **extra},
        timeout=5,
    )


def test_preflight_is_answered_by_the_gateway(edge: tuple[GatewayProcess, Upstream]) -> None:
    gw, upstream = edge
    before = upstream.count()
    response = preflight(gw, "/api/orders", APP, "POST", "Content-Type, Authorization")
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == APP
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert response.headers["Access-Control-Allow-Headers"] == "authorization, content-type"
    assert "Origin" in response.headers["Vary"]
    assert upstream.count() == before


@pytest.mark.parametrize(
    ("origin", "method", "headers"),
    [("https://evil.example", "GET", ""), (APP, "OPTIONS", ""), (APP, "GET", "X-Custom-Secret")],
)
def test_disallowed_preflight_is_refused_with_json(
    edge: tuple[GatewayProcess, Upstream], origin: str, method: str, headers: str
) -> None:
    gw, upstream = edge
    before = upstream.count()
    response = preflight(gw, "/api/orders", origin, method, headers)
    assert response.status_code == 403
    assert response.json()["error"] == "cors_refused"
    assert "Access-Control-Allow-Origin" not in response.headers
    assert upstream.count() == before


def test_preflight_for_trace_on_a_route_without_methods_is_refused(
    edge: tuple[GatewayProcess, Upstream],
) -> None:
    """No route on the path serves TRACE (it must be named), so the preflight asks in vain:
    the OPTIONS is routed as itself and its CORS policy refuses the method."""
    gw, upstream = edge
    before = upstream.count()
    response = preflight(gw, "/api/orders", APP, "TRACE")
    assert response.status_code == 403
    assert response.json()["error"] == "cors_refused"
    assert "Access-Control-Allow-Origin" not in response.headers
    assert upstream.count() == before


def test_actual_request_gets_the_origin_echoed_only_when_allowed(
    edge: tuple[GatewayProcess, Upstream],
) -> None:
    gw, _ = edge
    allowed = requests.get(f"{gw.url}/api/x", headers={"Origin": APP}, timeout=5)
    assert allowed.headers["Access-Control-Allow-Origin"] == APP
    assert "X-Request-Id" in allowed.headers["Access-Control-Expose-Headers"]
    other = requests.get(f"{gw.url}/api/x", headers={"Origin": "https://evil.example"}, timeout=5)
    assert other.status_code == 200
    assert "Access-Control-Allow-Origin" not in other.headers


def test_route_cors_block_replaces_the_global_one(edge: tuple[GatewayProcess, Upstream]) -> None:
    gw, _ = edge
    response = requests.get(
        f"{gw.url}/public/x", headers={"Origin": "https://any.example"}, timeout=5
    )
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert preflight(gw, "/public/x", "https://any.example", "GET").status_code == 204


def test_gateway_errors_carry_cors_and_security_headers(
    edge: tuple[GatewayProcess, Upstream],
) -> None:
    gw, _ = edge
    response = requests.post(f"{gw.url}/public/x", headers={"Origin": APP}, timeout=5)
    assert response.status_code == 405
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"


def test_security_headers_are_added_but_never_override_the_upstream(
    edge: tuple[GatewayProcess, Upstream],
) -> None:
    gw, _ = edge
    response = requests.get(f"{gw.url}/api/x", timeout=5)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")
    assert response.headers["X-XSS-Protection"] == "0"
    own = requests.get(f"{gw.url}/own/__xframe", timeout=5)
    assert own.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert own.headers["X-Content-Type-Options"] == "nosniff"
