"""Two identity providers behind one real gateway: partner ``alice`` and the main IdP's
``alice`` are two callers. They never share a cached answer or a rate-limit bucket, the
upstream is told which issuer vouched for each, and a route can accept only some issuers
(and ask for roles per issuer)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.rawhttp import raw_request
from tests.support.tokens import AUDIENCE, claims, mint_hs256
from tests.support.upstream import Upstream, start_upstream

MAIN = "https://login.example.com"
PARTNER = "https://partner.example.net"
SECRETS = {MAIN: "main-idp-secret-" + "m" * 32, PARTNER: "partner-idp-secret-" + "p" * 32}


def token(issuer: str, sub: str = "alice", role: str | None = "customer") -> str:
    return mint_hs256(SECRETS[issuer], claims(iss=issuer, sub=sub, role=role))


def get(gw: GatewayProcess, path: str, bearer: str, **headers: str) -> requests.Response:
    return requests.get(
        gw.url + path, headers={"Authorization": f"Bearer {bearer}", **headers}, timeout=5
    )


def seen_header(response: requests.Response, name: str) -> str | None:
    """What the echoing upstream received as ``name`` (None when absent)."""
    pairs = json.loads(response.text)["headers"]
    values = [v for n, v in pairs if n.lower() == name.lower()]
    return values[0] if values else None


def issuers(**extra: Any) -> list[dict[str, Any]]:
    return [
        {"issuer": MAIN, "secret": SECRETS[MAIN], "audiences": [AUDIENCE], **extra.get(MAIN, {})},
        {
            "issuer": PARTNER,
            "secret": SECRETS[PARTNER],
            "audiences": [AUDIENCE],
            **extra.get(PARTNER, {}),
        },
    ]


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = start_upstream()
    yield server
    server.close()


@pytest.fixture(scope="module")
def gw(upstream: Upstream) -> Iterator[GatewayProcess]:
    """Two issuers, a cached route, a per-user limit: nothing beyond the old vocabulary."""
    process = start_gateway(
        {
            "upstreams": {"svc": {"targets": [upstream.url]}},
            "auth": {"type": "jwt", "issuers": issuers()},
            "routes": [
                {"name": "mine", "path": "/me/**", "upstream": "svc", "cache": {"ttl": 30}},
                {"name": "limited", "path": "/limited/**", "upstream": "svc"},
                {"name": "open", "path": "/open/**", "upstream": "svc", "auth": "none"},
            ],
            "rate_limiting": {
                "overrides": [{"path": "/limited/**", "requests_per_minute": 3, "key": "user"}]
            },
        },
        workers=2,
    )
    yield process
    process.stop()


def test_two_alices_never_share_a_cached_answer(gw: GatewayProcess, upstream: Upstream) -> None:
    before = upstream.count()
    main = get(gw, "/me/profile", token(MAIN))
    partner = get(gw, "/me/profile", token(PARTNER))
    assert (main.status_code, partner.status_code) == (200, 200)
    assert main.headers["X-Cache"] == "MISS"
    assert partner.headers["X-Cache"] == "MISS"  # not main alice's entry
    assert seen_header(partner, "X-User-Issuer") == PARTNER
    assert upstream.count() == before + 2
    again = get(gw, "/me/profile", token(PARTNER))
    assert again.headers["X-Cache"] == "HIT" and seen_header(again, "X-User-Issuer") == PARTNER


def test_two_alices_draw_from_two_buckets(gw: GatewayProcess) -> None:
    statuses = [get(gw, "/limited/x", token(MAIN)).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    assert get(gw, "/limited/x", token(PARTNER)).status_code == 200  # her own bucket
    assert get(gw, "/limited/x", token(MAIN, sub="bob")).status_code == 200


def test_upstream_is_told_the_issuer_and_only_by_the_gateway(
    gw: GatewayProcess, upstream: Upstream
) -> None:
    response = get(gw, "/limited/issuer", token(PARTNER, sub="carol"), **{"X-User-Issuer": MAIN})
    assert response.status_code == 200
    seen = upstream.last()
    assert seen.header("X-User-Id") == "carol"
    assert [v for n, v in seen.headers if n.lower() == "x-user-issuer"] == [PARTNER]
    spoofed = (
        b"GET /open/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
        b"X-User-Issuer: https://login.example.com\r\nx-user-issuer: a\r\nX_User_Issuer: b\r\n\r\n"
    )
    assert raw_request(gw.port, spoofed).status == 200
    assert "x-user-issuer" not in upstream.last().header_names()
    assert "x_user_issuer" not in upstream.last().header_names()


@pytest.fixture(scope="module")
def restricted(upstream: Upstream) -> Iterator[GatewayProcess]:
    """Named issuers, and routes that accept only some of them."""
    process = start_gateway(
        {
            "upstreams": {"svc": {"targets": [upstream.url]}},
            "auth": {
                "type": "jwt",
                "issuers": issuers(**{MAIN: {"name": "main"}, PARTNER: {"name": "partner"}}),
            },
            "routes": [
                {
                    "name": "admin",
                    "path": "/admin/**",
                    "upstream": "svc",
                    "auth": {"issuers": ["main"], "roles": {"main": ["admin"]}},
                },
                {
                    "name": "staff",
                    "path": "/staff/**",
                    "upstream": "svc",
                    "auth": {"roles": {"main": ["staff"], "partner": ["partner-staff"]}},
                },
                {"name": "any", "path": "/any/**", "upstream": "svc", "auth": {"roles": ["x"]}},
            ],
        },
        workers=1,
    )
    yield process
    process.stop()


def test_route_refuses_an_issuer_it_does_not_accept(
    restricted: GatewayProcess, upstream: Upstream
) -> None:
    before = upstream.count()
    refused = get(restricted, "/admin/users", token(PARTNER, role="admin"))
    assert refused.status_code == 403
    assert refused.json()["error"] == "issuer_not_accepted"
    wrong_role = get(restricted, "/admin/users", token(MAIN, role="customer"))
    assert wrong_role.status_code == 403 and wrong_role.json()["error"] == "forbidden"
    assert upstream.count() == before
    assert get(restricted, "/admin/users", token(MAIN, role="admin")).status_code == 200


def test_roles_per_issuer(restricted: GatewayProcess) -> None:
    assert get(restricted, "/staff/a", token(MAIN, role="staff")).status_code == 200
    assert get(restricted, "/staff/a", token(PARTNER, role="partner-staff")).status_code == 200
    assert get(restricted, "/staff/a", token(PARTNER, role="staff")).status_code == 403
    assert get(restricted, "/staff/a", token(MAIN, role="partner-staff")).status_code == 403


def test_a_plain_role_list_still_applies_to_every_issuer(restricted: GatewayProcess) -> None:
    assert get(restricted, "/any/a", token(MAIN, role="x")).status_code == 200
    assert get(restricted, "/any/a", token(PARTNER, role="x")).status_code == 200
    assert get(restricted, "/any/a", token(PARTNER, role="y")).status_code == 403
