"""``gw explain`` predicts what the live pipeline does: the same answer, route and bucket.

Each probe is explained, then sent through ``Gateway.handle`` in process; explain's answer
(a status of gw's own, or "forwarded") must be what the client got, and a forwarded request
must reach the route's upstream. The rate-limit bucket explain names is the one the live
request takes a token from.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from gw.config.load import parse_config
from gw.explain import Probe, explain
from tests.pipeline.harness import InProcessGateway
from tests.support.fake_transport import FakeTransport
from tests.support.tokens import AUDIENCE, ISSUER, SECRET, claims, mint_hs256

SVC = "svc.test:8001"
APP = "https://app.example"

CONFIG: dict[str, Any] = {
    "server": {"trusted_proxies": ["10.0.0.0/8"]},
    "upstreams": {"svc": {"targets": [f"http://{SVC}"]}},
    "auth": {"issuer": ISSUER, "secret": SECRET, "audiences": [AUDIENCE]},
    "routes": [
        {"name": "api", "path": "/api/**", "upstream": "svc", "methods": ["GET", "POST"]},
        {"name": "admin", "path": "/admin/**", "upstream": "svc", "auth": {"roles": ["admin"]}},
        {"name": "trial", "path": "/trial/**", "upstream": "svc", "auth": "shadow"},
        {
            "name": "open",
            "path": "/open/{id}",
            "upstream": "svc",
            "auth": "none",
            "cors": {"allowed_origins": [APP]},
        },
    ],
    "rate_limiting": {
        "overrides": [
            {
                "path": "/api/**",
                "limits": [
                    {"name": "per-user", "requests_per_minute": 50, "key": "user"},
                    {"name": "per-ip", "requests_per_minute": 100},
                ],
            }
        ]
    },
}

# Minted at collection: valid for a day, however long the suite runs before these tests.
DAY = 86400
TOKEN = mint_hs256(SECRET, claims(sub="alice", ttl=DAY))
ADMIN = mint_hs256(SECRET, claims(sub="root", role="admin", ttl=DAY))
FORGED = mint_hs256("not-the-secret-" * 3, claims(sub="alice", ttl=DAY))

PROBES: list[tuple[str, str, dict[str, str]]] = [
    ("GET", "/api/orders/1", {"Authorization": f"Bearer {TOKEN}"}),
    ("GET", "/api/orders/1", {}),
    ("GET", "/api/orders/1", {"Authorization": f"Bearer {FORGED}"}),
    ("DELETE", "/api/orders/1", {"Authorization": f"Bearer {TOKEN}"}),
    ("GET", "/admin/users", {"Authorization": f"Bearer {TOKEN}"}),
    ("GET", "/admin/users", {"Authorization": f"Bearer {ADMIN}"}),
    ("GET", "/open/7", {}),
    ("GET", "/trial/x", {"Authorization": f"Bearer {FORGED}"}),
    ("GET", "/open/7/8", {}),
    ("GET", "/api/x/%2e%2e/%2e%2e/open/7", {}),
    ("GET", "/api/%2Fetc", {"Authorization": f"Bearer {TOKEN}"}),
    ("GET", "/nowhere", {}),
    ("OPTIONS", "/open/7", {"Origin": APP, "Access-Control-Request-Method": "GET"}),
    (
        "OPTIONS",
        "/open/7",
        {"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    ),
    ("GET", "/open/7", {"X-User-Id": "root", "X-Forwarded-For": "203.0.113.9"}),
]


@pytest.fixture
def transport() -> Iterator[FakeTransport]:
    fake = FakeTransport()
    yield fake
    fake.close()


def predicted_status(method: str, target: str, headers: dict[str, str]) -> int | None:
    """explain's answer as a status, or None: forwarded upstream."""
    probe = Probe(method, target, host="gw.test", headers=list(headers.items()))
    answer = explain(parse_config(CONFIG, environ={}), probe).answer
    if answer is None:
        return None
    return int(answer.split()[0])


@pytest.mark.parametrize(("method", "target", "headers"), PROBES)
def test_explain_predicts_the_live_answer(
    transport: FakeTransport, method: str, target: str, headers: dict[str, str]
) -> None:
    svc = transport.add(SVC)
    live = InProcessGateway(CONFIG, transport).request(method, target, headers)
    predicted = predicted_status(method, target, headers)
    if predicted is None:
        assert live.status == 200, live.body
        assert len(svc.received) == 1
    else:
        assert live.status == predicted, live.body
        assert svc.received == []


def test_the_bucket_explain_names_is_the_one_the_request_draws_from(
    transport: FakeTransport,
) -> None:
    transport.add(SVC)
    gateway = InProcessGateway(CONFIG, transport)
    config = gateway.gateway.config
    probe = Probe("GET", "/api/orders/1", host="gw.test", token=TOKEN)
    stage = next(s for s in explain(config, probe).stages if s.name == "rate limits")
    buckets = {row["limit"]: row["bucket"] for row in stage.data["limits"]}
    assert buckets["per-user"].startswith("per-user|user:")
    assert "alice" in buckets["per-user"]

    for _ in range(3):
        assert (
            gateway.request("GET", "/api/orders/1", {"Authorization": f"Bearer {TOKEN}"}).status
            == 200
        )
    assert config.admission is not None
    backend = config.admission.open_backend()
    for name, key in buckets.items():
        limit = config.admission.limit_named(name)
        assert limit is not None
        taken = backend.peek(key, limit.rate)  # type: ignore[attr-defined]
        fresh = backend.check(f"{name}|untouched", limit.rate)  # one token from a full bucket
        assert taken is not None and taken.remaining == fresh.remaining - 2


def test_no_match_names_the_nearest_routes_and_what_differed() -> None:
    config = parse_config(CONFIG, environ={})
    result = explain(config, Probe("GET", "/opne/7", host="gw.test"))
    assert result.answer is not None and result.answer.startswith("404 route_not_found")
    route = result.as_json()["stages"][-1]
    assert route["stage"] == "route" and route["route"] is None
    nearest = route["nearest"][0]
    assert nearest["route"] == "open"
    assert nearest["differences"] == ["path: segment 1 is 'opne', the route wants 'open'"]


def test_json_holds_the_same_stages_as_the_text() -> None:
    config = parse_config(CONFIG, environ={})
    result = explain(config, Probe("GET", "/api/orders/1?b=2", host="gw.test", token=TOKEN))
    data = result.as_json()
    assert data["forwarded"] is True
    names = [stage["stage"] for stage in data["stages"]]
    assert names == [
        "request",
        "route",
        "guards",
        "cors",
        "auth",
        "upstream headers",
        "rate limits",
        "cache",
        "shaping",
        "upstream",
    ]
    text = result.render().splitlines()
    assert [line.split(":")[0] for line in text if not line.startswith(" ")] == [*names, "answer"]
    upstream = data["stages"][-1]
    assert upstream["urls"] == [f"http://{SVC}/api/orders/1?b=2"]
    auth = data["stages"][4]
    assert auth["identity"]["subject"] == "alice"
    assert auth["identity"]["headers"]["X-User-Id"] == "alice"
