"""Upgrade tunnels in pure terms: the config (``upgrade:``, ``tunnels:``), the upstream's 101
read only when gw asked for it, and which requests ask for a tunnel at all."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from gw.cli import main
from gw.config.load import parse_config
from gw.core.headers import Headers
from gw.errors import ConfigError
from gw.tunnel.stage import asked
from gw.upstream.wire import MalformedResponse, Response

UPSTREAMS = {"chat": {"targets": ["http://127.0.0.1:9"]}}
SWITCHED = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x02hi"
)


def problems_of(data: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, {})
    return info.value.problems


def test_a_route_allows_the_protocols_it_names_in_lower_case() -> None:
    config = parse_config(
        {
            "upstreams": UPSTREAMS,
            "tunnels": {"idle_timeout": 30, "max_per_worker": 10},
            "routes": [{"path": "/ws", "upstream": "chat", "upgrade": ["WebSocket"]}],
        },
        {},
    )
    route = config.table.ordered()[0].payload
    assert route.upgrade == frozenset({"websocket"})
    assert config.tunnels.idle_timeout == 30 and config.tunnels.max_per_worker == 10
    assert config.tunnels.max_lifetime == 3600


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ({"upgrade": ["web socket"]}, "routes[0].upgrade"),
        ({"upgrade": ["websocket", "H2C"]}, "routes[0].upgrade: h2c is refused"),
        ({"upgrade": ["websocket"], "cache": {"ttl": 5}}, "routes[0].upgrade: a tunnel"),
    ],
)
def test_upgrade_mistakes_name_their_location(route: dict[str, object], expected: str) -> None:
    data = {"upstreams": UPSTREAMS, "routes": [{"path": "/ws", "upstream": "chat", **route}]}
    problems = problems_of(data)
    assert any(p.startswith(expected) for p in problems), problems


def test_tunnel_limits_are_checked() -> None:
    problems = problems_of({"tunnels": {"max_per_worker": 0, "idle_timeout": -1}})
    assert any(p.startswith("tunnels.max_per_worker") for p in problems), problems
    assert any(p.startswith("tunnels.idle_timeout") for p in problems), problems


def test_gw_check_refuses_an_upgrade_on_a_cached_route(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gw.yaml"
    route = {"path": "/ws", "upstream": "chat", "upgrade": ["websocket"], "cache": {"ttl": 5}}
    path.write_text(yaml.safe_dump({"upstreams": UPSTREAMS, "routes": [route]}))
    assert main(["check", "-c", str(path)]) == 1
    assert "routes[0].upgrade: a tunnel goes to one upstream, uncached" in capsys.readouterr().err


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.settimeout(5)
    yield ours, theirs
    ours.close()
    theirs.close()


def test_a_101_gw_asked_for_is_final_and_keeps_the_bytes_after_it(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    theirs.sendall(SWITCHED)
    response = Response(ours, head_request=False, upgrade=True)
    assert response.status == 101
    assert ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") in response.headers
    assert response.early == b"\x81\x02hi"  # a frame sent at once: relayed, not lost
    assert not response.reusable


def test_a_101_that_does_not_say_connection_upgrade_is_malformed(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    theirs.sendall(SWITCHED.replace(b"Connection: Upgrade\r\n", b""))
    with pytest.raises(MalformedResponse):
        Response(ours, head_request=False, upgrade=True)


def test_a_101_gw_did_not_ask_for_is_malformed(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    theirs.sendall(SWITCHED)
    with pytest.raises(MalformedResponse):
        Response(ours, head_request=False)


class _Asking:
    def __init__(self, method: str, headers: dict[str, str]) -> None:
        self.method = method
        self.headers = Headers(list(headers.items()))


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        ("GET", {"Connection": "keep-alive, Upgrade", "Upgrade": "WebSocket"}, "websocket"),
        ("GET", {"Connection": "Upgrade", "Upgrade": "h2c"}, None),  # not allowed here
        ("GET", {"Upgrade": "websocket"}, None),  # Connection does not name it
        ("POST", {"Connection": "Upgrade", "Upgrade": "websocket"}, None),
        ("GET", {"Connection": "Upgrade", "Upgrade": "websocket, h2c"}, None),
    ],
)
def test_only_a_get_asking_for_an_allowed_protocol_is_tunnelled(
    method: str, headers: dict[str, str], expected: str | None
) -> None:
    request = _Asking(method, headers)
    assert asked(request, frozenset({"websocket"})) == expected  # type: ignore[arg-type]
