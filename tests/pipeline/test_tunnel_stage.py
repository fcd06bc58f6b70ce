"""The tunnel stage in process: when the pipeline asks an upstream to switch protocols, and
when it does not (no server support, a route without ``upgrade:``, the worker's cap)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from gw.config.load import parse_config
from gw.edge.tunnel import SWITCH, Switch, open_count
from gw.pipeline import Gateway
from tests.pipeline.harness import build_environ
from tests.support.fake_transport import FakeTransport

SVC = "svc.test:8001"
UPGRADE = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13"}


@pytest.fixture
def transport() -> Iterator[FakeTransport]:
    fake = FakeTransport()
    fake.add(SVC)
    yield fake
    fake.close()


def gateway(transport: FakeTransport, max_per_worker: int = 4) -> Gateway:
    config = {
        "metrics": {"enabled": False},
        "upstreams": {"svc": {"targets": [f"http://{SVC}"]}},
        "tunnels": {"max_per_worker": max_per_worker},
        "routes": [
            {"path": "/ws/**", "upstream": "svc", "upgrade": ["websocket"]},
            {"path": "/plain/**", "upstream": "svc"},
        ],
    }
    return Gateway(parse_config(config, environ={}), connect=transport.connect)


def handle(gw: Gateway, path: str, switch: Switch | None) -> int:
    environ = build_environ("GET", path, dict(UPGRADE), b"", "127.0.0.1")
    if switch is not None:
        environ[SWITCH] = switch
    outcome = gw.handle(environ)
    list(outcome.body)
    close = getattr(outcome.body, "close", None)
    if close is not None:
        close()
    return outcome.status


@pytest.mark.parametrize(
    ("path", "switch"),
    [("/ws/a", None), ("/plain/a", Switch())],
    ids=["server without tunnels", "route without upgrade"],
)
def test_no_upgrade_is_asked_of_the_upstream(
    transport: FakeTransport, path: str, switch: Switch | None
) -> None:
    assert handle(gateway(transport), path, switch) == 200
    received = transport.upstreams[SVC].received[-1]
    assert "upgrade" not in received.headers
    assert "upgrade" not in received.headers.get("connection", "").lower()
    assert received.headers["sec-websocket-version"] == "13"
    if switch is not None:
        assert switch.tunnel is None
        switch.finish()


def test_over_the_cap_nothing_reaches_the_upstream(transport: FakeTransport) -> None:
    gw = gateway(transport, max_per_worker=1)
    before = open_count()
    held = Switch()
    assert held.reserve(before + 1)  # this worker's last place is taken
    try:
        assert handle(gw, "/ws/a", Switch()) == 503
        assert transport.upstreams[SVC].received == []
    finally:
        held.finish()
    assert open_count() == before


def test_an_upstream_that_does_not_switch_is_relayed_and_the_place_given_back(
    transport: FakeTransport,
) -> None:
    before = open_count()
    switch = Switch()
    assert handle(gateway(transport), "/ws/a", switch) == 200
    received = transport.upstreams[SVC].received[-1]
    assert received.headers["upgrade"] == "websocket"
    assert received.headers["connection"] == "Upgrade"
    assert switch.tunnel is None
    switch.finish()  # the edge's last word, whatever the answer
    assert open_count() == before


def test_a_handshake_is_never_mirrored(transport: FakeTransport) -> None:
    shadow = transport.add("shadow.test:8009")
    config = {
        "metrics": {"enabled": False},
        "upstreams": {
            "svc": {"targets": [f"http://{SVC}"]},
            "next": {"targets": ["http://shadow.test:8009"]},
        },
        "routes": [
            {
                "path": "/ws/**",
                "upstream": "svc",
                "upgrade": ["websocket"],
                "mirror": {"upstream": "next"},
            }
        ],
    }
    gw = Gateway(parse_config(config, environ={}), connect=transport.connect)
    switch = Switch()
    assert handle(gw, "/ws/a", switch) == 200
    switch.finish()
    assert transport.upstreams[SVC].received[-1].headers["upgrade"] == "websocket"
    plain = gw.handle(build_environ("GET", "/ws/b", {}, b"", "127.0.0.1"))
    list(plain.body)
    getattr(plain.body, "close", lambda: None)()  # the server's close: egress, out of flight
    deadline = time.monotonic() + 5
    while not shadow.received and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [r.target for r in shadow.received] == ["/ws/b"]  # the plain GET only
