"""OAuth 2.0 beyond JWTs through real gunicorn: opaque tokens introspected (RFC 7662) and keys
found by OpenID Connect Discovery, against a real provider on 127.0.0.1.

One worker, so "the provider saw one call for two requests" is about one answer cache.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests

from tests.metrics.scrape import samples, value
from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.idp_server import CLIENT_ID, CLIENT_SECRET, IdpServer, start_idp_server
from tests.support.tokens import AUDIENCE, SECRET, SigningKey, claims, mint_hs256, rsa_key
from tests.support.upstream import Upstream, start_upstream

MAIN = "https://login.example.com"


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return rsa_key("idp-1")


@pytest.fixture(scope="module")
def idp(key: SigningKey) -> Iterator[IdpServer]:
    server = start_idp_server(key)
    yield server
    server.close()


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = start_upstream()
    yield server
    server.close()


@pytest.fixture(scope="module")
def gw(idp: IdpServer, upstream: Upstream) -> Iterator[GatewayProcess]:
    process = start_gateway(
        {
            "upstreams": {"svc": {"targets": [upstream.url]}},
            "auth": {
                "type": "jwt",
                "issuers": [
                    {"name": "main", "issuer": MAIN, "secret": SECRET, "audiences": [AUDIENCE]},
                    {
                        "name": "idp",
                        "issuer": idp.issuer,
                        "discovery": True,
                        "audiences": [AUDIENCE],
                        "introspection": {
                            "endpoint": idp.introspect_url,
                            "client_id": CLIENT_ID,
                            "client_secret_env": "GW_INTROSPECTION_SECRET",
                            "timeout": 1,
                            "cache": {"negative_ttl": 5, "max_ttl": 60},
                        },
                    },
                ],
            },
            "routes": [
                {"path": "/api/**", "upstream": "svc"},
                {"path": "/jwt-only/**", "upstream": "svc", "auth": {"issuers": ["main"]}},
            ],
        },
        workers=1,
        extra_env={"GW_INTROSPECTION_SECRET": CLIENT_SECRET},
    )
    yield process
    process.stop()


def get(gw: GatewayProcess, path: str, token: str) -> requests.Response:
    return requests.get(gw.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def seen(response: requests.Response, name: str) -> str | None:
    pairs = json.loads(response.text)["headers"]
    return next((v for n, v in pairs if n.lower() == name.lower()), None)


def test_an_active_opaque_token_reaches_the_upstream_as_its_caller(
    gw: GatewayProcess, idp: IdpServer
) -> None:
    idp.activate("opaque-alice-1", sub="alice", aud=AUDIENCE, scope="orders")
    before = idp.introspections
    first, second = (
        get(gw, "/api/orders", "opaque-alice-1"),
        get(gw, "/api/orders", "opaque-alice-1"),
    )
    assert first.status_code == second.status_code == 200
    assert seen(first, "X-User-Id") == "alice"
    assert seen(first, "X-User-Issuer") == idp.issuer
    assert seen(first, "Authorization") == "Bearer opaque-alice-1"
    assert idp.introspections - before == 1  # the second request was answered from the cache


def test_an_inactive_token_gets_the_invalid_jwt_answer(gw: GatewayProcess, idp: IdpServer) -> None:
    response = get(gw, "/api/orders", "opaque-revoked-1")
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert response.json()["message"] == "the token is not active"
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="gw", error="invalid_token"')
    audit = [line for line in gw.log_text().splitlines() if '"reason":"inactive"' in line]
    assert audit and '"credential":"introspection"' in audit[-1]
    assert "opaque-revoked-1" not in gw.log_text()  # never the token itself


def test_a_jwt_is_verified_with_keys_found_by_discovery(
    gw: GatewayProcess, idp: IdpServer, key: SigningKey
) -> None:
    response = get(gw, "/api/orders", key.mint(claims(iss=idp.issuer, sub="bob")))
    assert response.status_code == 200 and seen(response, "X-User-Id") == "bob"
    assert idp.fetches("/.well-known/openid-configuration") >= 1 and idp.fetches("/jwks") >= 1


def test_a_jwt_only_route_refuses_opaque_tokens_without_asking(
    gw: GatewayProcess, idp: IdpServer
) -> None:
    idp.activate("opaque-alice-2", sub="alice", aud=AUDIENCE)
    before = idp.introspections
    response = get(gw, "/jwt-only/x", "opaque-alice-2")
    assert response.status_code == 401 and response.json()["error"] == "invalid_token"
    assert idp.introspections == before
    assert get(gw, "/jwt-only/x", mint_hs256(SECRET, claims(iss=MAIN))).status_code == 200


def test_provider_down_is_503_then_recovers(gw: GatewayProcess, idp: IdpServer) -> None:
    idp.activate("opaque-alice-3", sub="alice", aud=AUDIENCE)
    idp.go_down()
    try:
        response = get(gw, "/api/orders", "opaque-alice-3")
    finally:
        idp.come_back()
    assert response.status_code == 503
    assert response.json()["error"] == "introspection_unavailable"
    assert response.headers["Retry-After"] == "2"
    assert get(gw, "/api/orders", "opaque-alice-3").status_code == 200


def test_introspection_and_key_fetches_are_in_the_metrics(
    gw: GatewayProcess, idp: IdpServer, key: SigningKey
) -> None:
    idp.activate("opaque-alice-4", sub="alice", aud=AUDIENCE)
    for _ in range(2):
        assert get(gw, "/api/orders", "opaque-alice-4").status_code == 200
    assert get(gw, "/api/orders", key.mint(claims(iss=idp.issuer))).status_code == 200
    found = samples(requests.get(gw.url + "/metrics", timeout=5).text)
    calls = value(found, "gw_introspection_requests_total", issuer="idp", outcome="active")
    hits = value(found, "gw_introspection_cache_hits_total", issuer="idp", answer="active")
    assert calls is not None and calls >= 1 and hits is not None and hits >= 1
    assert (value(found, "gw_introspection_seconds_count", issuer="idp") or 0) >= 1
    uri = idp.issuer + "/.well-known/openid-configuration"
    assert (value(found, "gw_jwks_fetches_total", uri=uri, outcome="ok") or 0) >= 1


def test_guessed_opaque_tokens_cost_the_provider_at_most_the_failure_limit(
    idp: IdpServer, upstream: Upstream
) -> None:
    """Each guess is an introspection call; past ``failure_limit`` the address gets 429
    before its token is read, so the provider is not asked any more."""
    gw = start_gateway(
        {
            "upstreams": {"svc": {"targets": [upstream.url]}},
            "auth": {
                "issuers": [
                    {
                        "issuer": idp.issuer,
                        "introspection": {
                            "endpoint": idp.introspect_url,
                            "client_id": CLIENT_ID,
                            "client_secret_env": "GW_INTROSPECTION_SECRET",
                        },
                    }
                ],
                "failure_limit": {"limit": 3, "period": 60},
            },
            "routes": [{"path": "/api/**", "upstream": "svc"}],
        },
        workers=1,
        extra_env={"GW_INTROSPECTION_SECRET": CLIENT_SECRET},
    )
    try:
        before = idp.introspections
        statuses = [get(gw, "/api/x", f"guess-{n}").status_code for n in range(6)]
    finally:
        gw.stop()
    assert statuses == [401, 401, 401, 429, 429, 429]
    assert idp.introspections - before == 3
