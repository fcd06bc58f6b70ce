"""Mirroring in process: a share of a route's requests copied to a shadow upstream, without
the client's answer, latency or errors ever depending on the shadow."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gw.auth import hash_api_key
from gw.cli import main
from gw.config.load import parse_config
from gw.errors import ConfigError
from gw.mirror.stage import shadow_host
from tests.pipeline.harness import InProcessGateway
from tests.support.fake_transport import FakeTransport, FakeUpstream, Received, echo

SVC = "svc.test:8001"
SHADOW = "shadow.test:8009"
KEY = "alice-key-" + "a" * 24
UPSTREAMS = {
    "svc": {"targets": [f"http://{SVC}/v1"]},
    "next": {"targets": [f"http://{SHADOW}/next"]},
}


@pytest.fixture
def transport() -> Iterator[FakeTransport]:
    fake = FakeTransport()
    yield fake
    fake.close()


def gateway(transport: FakeTransport, route: dict[str, Any], **extra: Any) -> InProcessGateway:
    config = {"upstreams": UPSTREAMS, "routes": [route], "metrics": {"enabled": True}, **extra}
    return InProcessGateway(config, transport)


def mirrored(name: str, **mirror: Any) -> dict[str, Any]:
    """A route named ``name`` (metrics are per process: each test its own route name)."""
    return {
        "name": name,
        "path": "/api/**",
        "upstream": "svc",
        "mirror": {"upstream": "next", **mirror},
    }


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.01)


def mirror_counts(gw: InProcessGateway, route: str) -> dict[str, float]:
    """``gw_mirror_requests_total`` of ``route`` by outcome, as GET /metrics shows it."""
    text = gw.request("GET", "/metrics").body.decode()
    counts = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "gw_mirror_requests_total" and sample.labels["route"] == route:
                counts[sample.labels["outcome"]] = sample.value
    return counts


def test_the_share_of_requests_copied_is_the_percent(transport: FakeTransport) -> None:
    svc, shadow = transport.add(SVC), transport.add(SHADOW)
    gw = gateway(transport, mirrored("share", percent=10))
    for i in range(100):
        assert gw.request("GET", f"/api/{i}").status == 200
    eventually(lambda: len(shadow.received) == 10)
    assert len(svc.received) == 100
    # Spread evenly: every tenth request.
    assert sorted(r.target for r in shadow.received) == sorted(
        f"/next/api/{i}" for i in range(9, 100, 10)
    )
    eventually(lambda: mirror_counts(gw, "share") == {"2xx": 10})


def test_the_copy_carries_what_the_upstream_received_and_a_shadow_host(
    transport: FakeTransport,
) -> None:
    svc, shadow = transport.add(SVC), transport.add(SHADOW)
    keys = {"keys": [{"id": "k1", "sha256": hash_api_key(KEY), "consumer": "alice"}]}
    gw = gateway(transport, mirrored("copy"), auth={"type": "api_key", "api_keys": keys})
    headers = {"X-API-Key": KEY, "Content-Type": "text/plain", "X-User-Id": "mallory"}
    answer = gw.request("POST", "/api/orders?x=1", headers, body=b"hello")
    assert answer.status == 200
    eventually(lambda: len(shadow.received) == 1)
    main, copy = svc.received[0], shadow.received[0]
    assert (copy.method, copy.target, copy.body) == ("POST", "/next/api/orders?x=1", b"hello")
    assert main.target == "/v1/api/orders?x=1"
    assert copy.headers["host"] == "shadow.test-shadow:8009"
    assert copy.headers["x-user-id"] == main.headers["x-user-id"] == "alice"
    same = {k: v for k, v in main.headers.items() if k != "host"}
    assert {k: v for k, v in copy.headers.items() if k != "host"} == same


def test_a_slow_or_failing_shadow_changes_nothing_for_the_client(
    transport: FakeTransport,
) -> None:
    release = threading.Event()

    def stuck(received: Received) -> tuple[int, list[tuple[str, str]], bytes]:
        release.wait(2.0)
        return 500, [], b"shadow broke"

    svc, shadow = transport.add(SVC), transport.add(SHADOW, stuck)
    gw = gateway(transport, mirrored("slow"))
    try:
        started = time.monotonic()
        answer = gw.request("GET", "/api/x")
        took = time.monotonic() - started
        assert answer.status == 200 and answer.json() == {"path": "/v1/api/x", "method": "GET"}
        assert took < 0.5
        eventually(lambda: len(shadow.received) == 1)
    finally:
        release.set()
    eventually(lambda: mirror_counts(gw, "slow") == {"5xx": 1})
    assert len(svc.received) == 1


def test_a_dead_shadow_is_counted_and_the_client_is_answered(transport: FakeTransport) -> None:
    svc = transport.add(SVC)  # nothing listens on the shadow
    gw = gateway(transport, mirrored("dead"))
    assert [gw.request("GET", "/api/x").status for _ in range(3)] == [200] * 3
    eventually(lambda: mirror_counts(gw, "dead") == {"upstream_unavailable": 3})
    assert len(svc.received) == 3


def test_copies_over_max_in_flight_are_dropped_and_counted(transport: FakeTransport) -> None:
    release = threading.Event()

    def held(received: Received) -> tuple[int, list[tuple[str, str]], bytes]:
        release.wait(5.0)
        return echo(received)

    transport.add(SVC)
    shadow = transport.add(SHADOW, held)
    gw = gateway(transport, mirrored("busy", max_in_flight=2))
    try:
        assert [gw.request("GET", f"/api/{i}").status for i in range(5)] == [200] * 5
        eventually(lambda: len(shadow.received) == 2)
        assert mirror_counts(gw, "busy") == {"dropped": 3}
    finally:
        release.set()
    eventually(lambda: mirror_counts(gw, "busy") == {"dropped": 3, "2xx": 2})
    # The slots are free again.
    assert gw.request("GET", "/api/later").status == 200
    eventually(lambda: len(shadow.received) == 3)


@pytest.mark.parametrize("buffer", [64 * 1024, 0])
def test_only_buffered_bodies_up_to_the_cap_are_copied(
    transport: FakeTransport, buffer: int
) -> None:
    svc, shadow = transport.add(SVC), transport.add(SHADOW)
    gw = gateway(
        transport,
        mirrored(f"cap{buffer}", max_body_bytes=10),
        server={"request_buffer_bytes": buffer},
    )
    assert gw.request("POST", "/api/big", body=b"b" * 11).status == 200
    assert gw.request("POST", "/api/small", body=b"s" * 10).status == 200
    assert gw.request("GET", "/api/none").status == 200
    if buffer:
        eventually(lambda: len(shadow.received) == 2)
        assert [(r.target, r.body) for r in shadow.received if r.body] == [
            ("/next/api/small", b"s" * 10)
        ]
        expected = {"body_too_large": 1, "2xx": 2}
    else:  # every body streams: none can be copied
        eventually(lambda: len(shadow.received) == 1)
        assert shadow.received[0].target == "/next/api/none"
        expected = {"body_too_large": 2, "2xx": 1}
    eventually(lambda: mirror_counts(gw, f"cap{buffer}") == expected)
    assert len(svc.received) == 3


def test_a_refused_request_is_never_copied(transport: FakeTransport) -> None:
    transport.add(SVC)
    shadow: FakeUpstream = transport.add(SHADOW)
    route = mirrored("guarded") | {"max_body_bytes": 4, "deny_from": ["192.0.2.0/24"]}
    gw = gateway(transport, route)
    assert gw.request("GET", "/api/x", peer="192.0.2.1").status == 403
    assert gw.request("POST", "/api/x", body=b"12345").status == 413
    assert gw.request("GET", "/api/ok").status == 200
    eventually(lambda: len(shadow.received) == 1)
    assert shadow.received[0].target == "/next/api/ok"


@pytest.mark.parametrize(
    ("host", "marked"),
    [
        ("orders:8080", "orders-shadow:8080"),
        ("orders", "orders-shadow"),
        ("10.0.0.7:3002", "10.0.0.7-shadow:3002"),
        ("[::1]:8080", "[::1]-shadow:8080"),
    ],
)
def test_the_shadow_host_is_marked_before_the_port(host: str, marked: str) -> None:
    assert shadow_host(host) == marked


def problems(route: dict[str, Any]) -> list[str]:
    ok = {"path": "/ok/**", "upstream": "svc"}
    config = {"upstreams": UPSTREAMS, "routes": [ok, route]}
    with pytest.raises(ConfigError) as caught:
        parse_config(config, environ={})
    return caught.value.problems


def test_a_bad_mirror_is_refused_with_its_location() -> None:
    route = {"path": "/api/**", "upstream": "svc"}
    assert problems(route | {"mirror": {"upstream": "nope"}}) == [
        "routes[1].mirror.upstream: no upstream named 'nope' (known: next, svc)"
    ]
    assert problems(route | {"mirror": {"upstream": "svc"}}) == [
        "routes[1].mirror.upstream: is the route's own upstream"
    ]
    [percent] = problems(route | {"mirror": {"upstream": "next", "percent": 0}})
    assert percent.startswith("routes[1].mirror.percent: ")
    [extra] = problems(route | {"mirror": {"upstream": "next", "fraction": 1}})
    assert extra == "routes[1].mirror.fraction: unknown key"


def test_gw_check_warns_when_the_body_cap_exceeds_what_gw_buffers() -> None:
    route = mirrored("warned", max_body_bytes=100_000)
    config = {"upstreams": UPSTREAMS, "routes": [route], "server": {"request_buffer_bytes": 1000}}
    assert parse_config(config, environ={}).warnings == (
        "routes[0].mirror.max_body_bytes: bodies over server.request_buffer_bytes (1000) "
        "stream to the upstream and are never mirrored",
    )


def test_gw_explain_shows_where_the_copy_goes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gw.yaml"
    route = mirrored("explained", percent=12.5) | {"strip_prefix": "/api"}
    path.write_text(yaml.safe_dump({"upstreams": UPSTREAMS, "routes": [route]}))
    assert main(["explain", "-c", str(path), "GET", "/api/orders/7?x=1"]) == 0
    assert (
        "  mirror: 12.5% copied to next as /next/orders/7?x=1 (bodies up to 65536 bytes)"
        in capsys.readouterr().out.splitlines()
    )
