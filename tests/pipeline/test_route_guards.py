"""Per-route guards in process: ``max_body_bytes``, ``allow_from``/``deny_from`` and
``connect_timeout`` on a route, what the client sees and what the upstream received."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gw.auth import hash_api_key
from gw.cli import main
from gw.config.load import parse_config
from gw.errors import ConfigError
from gw.upstream.spec import Target
from tests.pipeline.harness import InProcessGateway
from tests.support.fake_transport import FakeTransport

SVC = "svc.test:8001"
KEY = "alice-key-" + "a" * 24


@pytest.fixture
def transport() -> Iterator[FakeTransport]:
    fake = FakeTransport()
    yield fake
    fake.close()


def gateway(transport: FakeTransport, *routes: dict[str, Any], **extra: Any) -> InProcessGateway:
    upstreams = {"svc": {"targets": [f"http://{SVC}"]}}
    return InProcessGateway({"upstreams": upstreams, "routes": list(routes), **extra}, transport)


# -- max_body_bytes ---------------------------------------------------------------------------


def test_a_routes_body_limit_refuses_a_declared_length_before_any_upstream(
    transport: FakeTransport,
) -> None:
    svc = transport.add(SVC)
    gw = gateway(
        transport,
        {"name": "small", "path": "/small/**", "upstream": "svc", "max_body_bytes": 10},
        {"name": "other", "path": "/other/**", "upstream": "svc"},
    )
    answer = gw.request("POST", "/small/x", body=b"x" * 11)
    assert answer.status == 413
    assert answer.json()["error"] == "body_too_large"
    assert svc.connections == 0 and svc.received == []
    assert gw.request("POST", "/small/x", body=b"x" * 10).status == 200
    assert gw.request("POST", "/other/x", body=b"x" * 11).status == 200  # server's 10 MiB
    assert [r.body for r in svc.received] == [b"x" * 10, b"x" * 11]


@pytest.mark.parametrize("buffer", [64 * 1024, 0])
def test_a_routes_body_limit_stops_a_chunked_body_that_grows_over_it(
    transport: FakeTransport, buffer: int
) -> None:
    """Buffered (read whole first) or streamed to the upstream, the chunked body is cut at
    the route's limit and the client gets 413; the upstream never gets a whole request."""
    svc = transport.add(SVC)
    gw = gateway(
        transport,
        {"name": "small", "path": "/small/**", "upstream": "svc", "max_body_bytes": 100_000},
        server={"request_buffer_bytes": buffer},
    )
    chunked = {"Transfer-Encoding": "chunked"}
    answer = gw.request("POST", "/small/x", chunked, body=b"y" * 200_000)
    assert answer.status == 413
    assert answer.json()["error"] == "body_too_large"
    assert svc.received == []
    assert gw.request("POST", "/small/x", chunked, body=b"y" * 100_000).status == 200
    assert len(svc.received) == 1 and svc.received[0].body == b"y" * 100_000


def test_a_route_may_allow_more_than_the_server(transport: FakeTransport) -> None:
    svc = transport.add(SVC)
    gw = gateway(
        transport,
        {"name": "upload", "path": "/upload/**", "upstream": "svc", "max_body_bytes": 1000},
        {"name": "api", "path": "/api/**", "upstream": "svc"},
        server={"max_body_bytes": 10},
    )
    assert gw.request("POST", "/upload/x", body=b"z" * 500).status == 200
    assert gw.request("POST", "/api/x", body=b"z" * 500).status == 413
    assert len(svc.received) == 1


# -- allow_from / deny_from ------------------------------------------------------------------


def guarded(transport: FakeTransport, **extra: Any) -> InProcessGateway:
    return gateway(
        transport,
        {
            "name": "admin",
            "path": "/admin/**",
            "upstream": "svc",
            "allow_from": ["10.0.0.0/8", "2001:db8::/32"],
            "deny_from": ["10.9.0.0/16"],
        },
        {"name": "blocklist", "path": "/public/**", "upstream": "svc", "deny_from": ["192.0.2.7"]},
        **extra,
    )


@pytest.mark.parametrize(
    ("peer", "status"),
    [
        ("10.1.2.3", 200),
        ("::ffff:10.1.2.3", 200),  # a dual-stack listener's form of an IPv4 peer
        ("2001:db8::5", 200),
        ("192.0.2.1", 403),  # outside the allow list
        ("10.9.1.1", 403),  # in both lists: deny wins
        ("::ffff:10.9.1.1", 403),
        ("", 403),  # a unix socket peer: not an address, so not provably allowed
    ],
)
def test_an_allow_list_admits_only_its_networks_and_deny_wins(
    transport: FakeTransport, peer: str, status: int
) -> None:
    svc = transport.add(SVC)
    answer = guarded(transport).request("GET", "/admin/x", peer=peer)
    assert answer.status == status
    if status == 403:
        assert answer.json()["error"] == "ip_forbidden"
        assert svc.received == []
    else:
        assert len(svc.received) == 1


def test_a_deny_list_alone_refuses_only_its_networks(transport: FakeTransport) -> None:
    svc = transport.add(SVC)
    gw = guarded(transport)
    assert gw.request("GET", "/public/x", peer="192.0.2.7").status == 403
    assert gw.request("GET", "/public/x", peer="::ffff:192.0.2.7").status == 403
    assert gw.request("GET", "/public/x", peer="192.0.2.8").status == 200
    assert len(svc.received) == 1


def test_the_address_judged_is_the_one_a_trusted_proxy_vouches_for(
    transport: FakeTransport,
) -> None:
    svc = transport.add(SVC)
    gw = guarded(transport, server={"trusted_proxies": ["127.0.0.1/32"]})
    # Behind the trusted proxy, the client it names is judged, not the proxy.
    assert gw.request("GET", "/admin/x", {"X-Forwarded-For": "10.1.2.3"}).status == 200
    behind = gw.request("GET", "/admin/x", {"X-Forwarded-For": "10.1.2.3, 192.0.2.1"})
    assert behind.status == 403
    # An untrusted peer's X-Forwarded-For is ignored: it cannot talk its way in.
    spoofed = gw.request("GET", "/admin/x", {"X-Forwarded-For": "10.1.2.3"}, peer="192.0.2.1")
    assert spoofed.status == 403
    assert len(svc.received) == 1


def test_a_refused_address_is_refused_before_authentication(transport: FakeTransport) -> None:
    svc = transport.add(SVC)
    gw = guarded(
        transport,
        auth={
            "type": "api_key",
            "api_keys": {"keys": [{"id": "k1", "sha256": hash_api_key(KEY), "consumer": "alice"}]},
        },
    )
    outside = gw.request("GET", "/admin/x", {"X-API-Key": KEY}, peer="192.0.2.1")
    assert outside.status == 403 and outside.json()["error"] == "ip_forbidden"
    assert gw.request("GET", "/admin/x", peer="192.0.2.1").status == 403  # not 401
    assert gw.request("GET", "/admin/x", peer="10.1.2.3").status == 401
    assert gw.request("GET", "/admin/x", {"X-API-Key": KEY}, peer="10.1.2.3").status == 200
    assert len(svc.received) == 1


# -- connect_timeout -------------------------------------------------------------------------


def test_a_routes_connect_timeout_replaces_the_upstreams(transport: FakeTransport) -> None:
    transport.add(SVC, lambda received: (200, [("Connection", "close")], b"ok"))  # no reuse
    asked: list[float] = []
    connect = transport.connect

    def recording(target: Target, timeout: float) -> Any:
        asked.append(timeout)
        return connect(target, timeout)

    transport.connect = recording  # type: ignore[method-assign]
    gw = gateway(
        transport,
        {"name": "quick", "path": "/quick/**", "upstream": "svc", "connect_timeout": 0.25},
        {"name": "plain", "path": "/plain/**", "upstream": "svc"},
        upstreams={"svc": {"targets": [f"http://{SVC}"], "connect_timeout": 1.5}},
    )
    assert gw.request("GET", "/quick/x").status == 200
    assert gw.request("GET", "/plain/x").status == 200
    assert asked == [0.25, 1.5]


# -- configuration ---------------------------------------------------------------------------


def problems(routes: list[dict[str, Any]]) -> list[str]:
    config = {"upstreams": {"svc": {"targets": [f"http://{SVC}"]}}, "routes": routes}
    with pytest.raises(ConfigError) as caught:
        parse_config(config, environ={})
    return caught.value.problems


def test_a_bad_network_is_refused_with_its_exact_location() -> None:
    ok = {"path": "/a/**", "upstream": "svc"}
    bad = {"path": "/b/**", "upstream": "svc", "deny_from": ["10.0.0.0/8", "10.0.0.300/8"]}
    [problem] = problems([ok, ok | {"path": "/c/**"}, bad])
    assert problem.startswith("routes[2].deny_from[1]: not a CIDR network")
    assert "10.0.0.300/8" in problem
    [unix] = problems([ok | {"allow_from": ["unix"]}])
    assert unix.startswith("routes[0].allow_from[0]: not a CIDR network")


def test_an_empty_list_and_a_negative_limit_are_refused() -> None:
    route = {"path": "/a/**", "upstream": "svc"}
    [empty] = problems([route | {"allow_from": []}])
    assert empty.startswith("routes[0].allow_from: ")
    [negative] = problems([route | {"max_body_bytes": -1}])
    assert negative.startswith("routes[0].max_body_bytes: ")
    [timeout] = problems([route | {"connect_timeout": 0}])
    assert timeout.startswith("routes[0].connect_timeout: ")


def test_gw_explain_says_whether_the_client_address_may_use_the_route(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = {
        "upstreams": {"svc": {"targets": ["http://127.0.0.1:9"]}},
        "routes": [{"path": "/admin/**", "upstream": "svc", "allow_from": ["10.0.0.0/8"]}],
    }
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(config))
    for ip, verdict, status in (
        ("10.1.1.1", "allowed", 0),
        ("192.0.2.1", "refused: 403 ip_forbidden", 1),
    ):
        assert main(["explain", "-c", str(path), "GET", "/admin/x", "--client-ip", ip]) == status
        out = capsys.readouterr().out
        assert f"guards: client {ip}: {verdict} (allow_from / deny_from)" in out
