"""Routes chosen by headers, query parameters and cookies, through ``Gateway.handle``: which
upstream receives the request, and what a client cannot make gw pick."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from gw.errors import ConfigError
from gw.explain import Probe, explain
from tests.pipeline.harness import InProcessGateway
from tests.support.fake_transport import FakeTransport

STABLE = "stable.test:8001"
CANARY = "canary.test:8002"
BETA = "beta.test:8003"
UPSTREAMS = {"stable": STABLE, "canary": CANARY, "beta": BETA}  # named like their routes


@pytest.fixture
def transport() -> Iterator[FakeTransport]:
    fake = FakeTransport()
    yield fake
    fake.close()


def gateway(transport: FakeTransport, *canary_matches: dict[str, object]) -> InProcessGateway:
    routes: list[dict[str, object]] = [{"path": "/api/**", "upstream": "stable"}]
    routes += [{"path": "/api/**", "upstream": "canary", "match": m} for m in canary_matches]
    upstreams = {"stable": {"targets": [f"http://{STABLE}"]}}
    upstreams["canary"] = {"targets": [f"http://{CANARY}"]}
    return InProcessGateway({"upstreams": upstreams, "routes": routes}, transport)


def test_a_canary_header_sends_the_request_to_the_canary(transport: FakeTransport) -> None:
    stable, canary = transport.add(STABLE), transport.add(CANARY)
    gw = gateway(transport, {"headers": {"X-Canary": "1"}})
    assert gw.request("GET", "/api/a", {"x-canary": "1"}).status == 200
    assert gw.request("GET", "/api/b", {"X-Canary": "0"}).status == 200
    assert gw.request("GET", "/api/c").status == 200
    assert [r.target for r in canary.received] == ["/api/a"]
    assert [r.target for r in stable.received] == ["/api/b", "/api/c"]
    assert canary.received[0].headers.get("x-canary") == "1"  # the header is forwarded


def test_a_header_gw_drops_cannot_pick_a_route(transport: FakeTransport) -> None:
    """Conditions see what the upstream receives: not a header the client names in
    Connection (gw drops it), so naming it there cannot pick the route either."""
    stable, canary = transport.add(STABLE), transport.add(CANARY)
    gw = gateway(transport, {"headers": {"X-Canary": "1"}})
    gw.request("GET", "/api/x", {"X-Canary": "1", "Connection": "X-Canary"})
    assert canary.received == [] and len(stable.received) == 1
    assert "x-canary" not in stable.received[0].headers


def test_a_repeated_query_parameter_never_selects_a_route(transport: FakeTransport) -> None:
    stable, canary = transport.add(STABLE), transport.add(CANARY)
    gw = gateway(transport, {"query": {"version": ["v2", "v3"]}})
    gw.request("GET", "/api/x?version=v2")
    gw.request("GET", "/api/x?version=v2&version=v1")
    gw.request("GET", "/api/x?version=v2&versio%6E=v1")
    assert [r.target for r in canary.received] == ["/api/x?version=v2"]
    assert len(stable.received) == 2


def test_cookies_select_by_presence_and_prefix(transport: FakeTransport) -> None:
    stable, canary = transport.add(STABLE), transport.add(CANARY)
    gw = gateway(transport, {"cookies": {"beta": {"present": True}, "uid": {"prefix": "emp-"}}})
    gw.request("GET", "/api/1", {"Cookie": "uid=emp-7; beta="})
    gw.request("GET", "/api/2", {"Cookie": "uid=cust-7; beta=1"})
    gw.request("GET", "/api/3", {"Cookie": "uid=emp-7"})
    assert [r.target for r in canary.received] == ["/api/1"]
    assert [r.target for r in stable.received] == ["/api/2", "/api/3"]


def test_a_route_whose_conditions_fail_is_404_when_alone(transport: FakeTransport) -> None:
    canary = transport.add(CANARY)
    upstreams = {"canary": {"targets": [f"http://{CANARY}"]}}
    route = {"path": "/beta/**", "upstream": "canary", "match": {"headers": {"X-Beta": "yes"}}}
    gw = InProcessGateway({"upstreams": upstreams, "routes": [route]}, transport)
    answer = gw.request("GET", "/beta/x")
    assert answer.status == 404 and answer.json()["error"] == "route_not_found"
    assert gw.request("GET", "/beta/x", {"X-Beta": "yes"}).status == 200
    assert len(canary.received) == 1


def test_a_hash_on_a_cookie_keeps_a_user_on_one_target(transport: FakeTransport) -> None:
    """``hash_key: cookie:uid``: one uid, one target; a repeated uid is no key (round robin)."""
    a, b = transport.add("a.test:8001"), transport.add("b.test:8002")
    app = {
        "targets": ["http://a.test:8001", "http://b.test:8002"],
        "balance": "hash",
        "hash_key": "cookie:uid",
    }
    routes = [{"path": "/**", "upstream": "app"}]
    gw = InProcessGateway({"upstreams": {"app": app}, "routes": routes}, transport)
    for user in range(8):
        for _ in range(3):
            gw.request("GET", f"/u{user}", {"Cookie": f"theme=dark; uid={user}"})
    by_user = {r.target for r in a.received}, {r.target for r in b.received}
    assert not by_user[0] & by_user[1] and len(by_user[0] | by_user[1]) == 8
    assert len(a.received) + len(b.received) == 24
    before = len(a.received), len(b.received)
    for _ in range(4):
        gw.request("GET", "/twice", {"Cookie": "uid=1; uid=2"})
    assert (len(a.received) - before[0], len(b.received) - before[1]) == (2, 2)


@pytest.mark.parametrize("key", ["cookie:", "cookie:a b", "cookies:uid"])
def test_a_bad_cookie_hash_key_is_refused(transport: FakeTransport, key: str) -> None:
    app = {"targets": ["http://a.test:8001"], "balance": "hash", "hash_key": key}
    with pytest.raises(ConfigError) as caught:
        InProcessGateway({"upstreams": {"app": app}, "routes": []}, transport)
    assert "upstreams.app.hash_key: must be client_ip, user, header:NAME or cookie:NAME" in str(
        caught.value
    )


AGREE_CONFIG: dict[str, Any] = {
    "upstreams": {
        "stable": {"targets": [f"http://{STABLE}"]},
        "canary": {"targets": [f"http://{CANARY}"]},
        "beta": {"targets": [f"http://{BETA}"]},
    },
    "routes": [
        {"name": "stable", "path": "/api/**", "upstream": "stable"},
        {
            "name": "canary",
            "path": "/api/**",
            "upstream": "canary",
            "match": {"headers": {"X-Canary": "1"}, "query": {"v": ["2", "3"]}},
        },
        {
            "name": "beta",
            "path": "/api/**",
            "upstream": "beta",
            "match": {"cookies": {"beta": {"prefix": "on"}}, "query": {"v": {"present": False}}},
        },
    ],
}


@pytest.mark.parametrize(
    ("target", "headers"),
    [
        ("/api/x?v=2", {"X-Canary": "1"}),
        ("/api/x?v=2&v=3", {"X-Canary": "1"}),
        ("/api/x?v=2", {"X-Canary": "1", "Connection": "X-Canary"}),
        ("/api/x?v=4", {"X-Canary": "1"}),
        ("/api/x", {"Cookie": "beta=on-1"}),
        ("/api/x?v", {"Cookie": "beta=on-1"}),
        ("/api/x", {"Cookie": "beta=on; beta=off"}),
    ],
)
def test_explain_names_the_route_the_live_request_takes(
    transport: FakeTransport, target: str, headers: dict[str, str]
) -> None:
    upstreams = {name: transport.add(netloc) for name, netloc in UPSTREAMS.items()}
    live = InProcessGateway(AGREE_CONFIG, transport)
    assert live.request("GET", target, headers).status == 200
    probe = Probe("GET", target, host="gw.test", headers=list(headers.items()))
    route = next(s for s in explain(live.gateway.config, probe).stages if s.name == "route")
    reached = [name for name, upstream in upstreams.items() if upstream.received]
    assert reached == [route.data["route"]]
