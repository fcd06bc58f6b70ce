"""WebSocket tunnels through real gunicorn (gw's gevent worker), with the ``websockets``
library on both sides: echo both ways, closes passed on, the idle limit, the per-worker cap,
authentication of the handshake, the open-tunnel gauge, and a worker stop."""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from gw.auth import hash_api_key
from tests.integration.test_deploy import require_tool, start_nginx, wait_healthy_through
from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.tls import make_certificate, server_context
from tests.support.ws_upstream import WsUpstream, connect_kwargs, start_ws_upstream, ws_url

pytestmark = pytest.mark.integration

KEY = "alice-key-" + "a" * 24
AUTH = {"X-API-Key": KEY}


def gateway_config(upstream: WsUpstream, liar: str = "", **tunnels: Any) -> dict[str, Any]:
    liar_routes = [{"path": "/liar/**", "upstream": liar, "upgrade": ["websocket"]}]
    return {
        "upstreams": {"chat": {"targets": [upstream.url]}},
        "auth": {
            "type": "api_key",
            "api_keys": {
                "keys": [{"id": "alice", "sha256": hash_api_key(KEY), "consumer": "alice"}]
            },
        },
        "tunnels": tunnels,
        "routes": [
            {"name": "ws", "path": "/ws/**", "upstream": "chat", "upgrade": ["websocket"]},
            {"name": "open", "path": "/open/**", "upstream": "chat", "auth": "none"},
            *(liar_routes if liar else []),
        ],
    }


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[GatewayProcess, WsUpstream]]:
    upstream = start_ws_upstream()
    liar = socket.create_server(("127.0.0.1", 0))
    serving = threading.Thread(target=_switch_to_h2c, args=(liar,), daemon=True)
    serving.start()
    port = liar.getsockname()[1]
    config = gateway_config(
        upstream, f"http://127.0.0.1:{port}", idle_timeout=1.5, max_per_worker=2
    )
    gw = start_gateway(config, workers=1, threads=1)
    yield gw, upstream
    gw.stop()
    upstream.close()
    liar.close()
    serving.join(timeout=5)


def _switch_to_h2c(listener: socket.socket) -> None:
    """An upstream that answers every request with a switch to another protocol than asked."""
    listener.settimeout(0.2)
    for _ in range(600):  # bounded: two minutes at most
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            return  # closed: the module is done
        with conn:
            conn.settimeout(5)
            with contextlib.suppress(OSError):
                conn.recv(65536)
                conn.sendall(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n"
                    b"Connection: Upgrade\r\n\r\n"
                )


def ws(gw: GatewayProcess, path: str = "/ws/room", **headers: str) -> ClientConnection:
    return connect(ws_url(gw.url, path), additional_headers=headers, **connect_kwargs())


def test_messages_echo_both_ways_text_and_binary(stack: tuple[GatewayProcess, WsUpstream]) -> None:
    gw, upstream = stack
    with ws(gw, **AUTH) as conn:
        conn.send("hello")
        assert conn.recv(timeout=5) == "hello"
        blob = bytes(range(256)) * 300  # several TCP segments, every byte value
        conn.send(blob)
        assert conn.recv(timeout=5) == blob
        assert conn.response.status_code == 101
        assert conn.response.headers["Upgrade"].lower() == "websocket"
        assert conn.response.headers["X-Request-Id"]
    seen = upstream.handshakes[-1]
    assert seen["X-User-Id"] == "alice"  # the handshake was authenticated like any request
    assert "Sec-WebSocket-Key" in seen and seen["Sec-WebSocket-Version"] == "13"


def test_handshake_without_credential_is_refused_before_the_upstream(
    stack: tuple[GatewayProcess, WsUpstream],
) -> None:
    gw, upstream = stack
    before = len(upstream.handshakes)
    with pytest.raises(InvalidStatus) as refused:
        ws(gw)
    assert refused.value.response.status_code == 401
    assert b'"unauthorized"' in refused.value.response.body
    assert len(upstream.handshakes) == before


def test_a_handshake_the_upstream_refuses_is_relayed_as_an_answer(
    stack: tuple[GatewayProcess, WsUpstream],
) -> None:
    gw, _ = stack
    for _ in range(3):  # more than max_per_worker: each refused handshake gives its place back
        with pytest.raises(InvalidStatus) as refused:
            ws(gw, "/ws/deny", **AUTH)
        assert refused.value.response.status_code == 403
        assert refused.value.response.body == b"denied\n"
    assert _gauge(gw) == 0


def test_a_switch_to_another_protocol_than_asked_is_a_502(
    stack: tuple[GatewayProcess, WsUpstream],
) -> None:
    gw, _ = stack
    with pytest.raises(InvalidStatus) as refused:
        ws(gw, "/liar/x", **AUTH)
    assert refused.value.response.status_code == 502
    assert b'"upstream_bad_response"' in refused.value.response.body
    assert _gauge(gw) == 0


def test_client_going_away_closes_the_upstream_side(
    stack: tuple[GatewayProcess, WsUpstream],
) -> None:
    gw, upstream = stack
    ended = len(upstream.ended)
    with ws(gw, **AUTH) as conn:
        conn.send("x")
        assert conn.recv(timeout=5) == "x"
        conn.socket.shutdown(socket.SHUT_RDWR)  # no close frame: only the TCP close says it
        assert upstream.wait_ended(ended + 1, timeout=5)


def test_upstream_close_reaches_the_client(stack: tuple[GatewayProcess, WsUpstream]) -> None:
    gw, _ = stack
    with ws(gw, **AUTH) as conn:
        conn.send("close")
        started = time.monotonic()
        with pytest.raises(ConnectionClosed) as closed:
            conn.recv(timeout=5)
        assert time.monotonic() - started < 3  # the TCP close too (close_timeout is 10 s)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000


def test_an_idle_tunnel_is_closed(stack: tuple[GatewayProcess, WsUpstream]) -> None:
    gw, upstream = stack
    ended = len(upstream.ended)
    with ws(gw, **AUTH) as conn:
        started = time.monotonic()
        with pytest.raises(ConnectionClosed):
            conn.recv(timeout=10)
        assert time.monotonic() - started < 6  # idle_timeout 1.5 s, checked every second
    assert upstream.wait_ended(ended + 1, timeout=5)


def test_over_the_cap_the_handshake_gets_503_and_the_gauge_counts(
    stack: tuple[GatewayProcess, WsUpstream],
) -> None:
    gw, upstream = stack
    with ws(gw, **AUTH) as first, ws(gw, **AUTH) as second:
        assert _gauge(gw) == 2
        before = len(upstream.handshakes)
        with pytest.raises(InvalidStatus) as refused:
            ws(gw, **AUTH)
        assert refused.value.response.status_code == 503
        assert b'"tunnel_limit"' in refused.value.response.body
        assert len(upstream.handshakes) == before  # refused before connecting
        second.send("still here")
        assert second.recv(timeout=5) == "still here"
        first.send("me too")
        assert first.recv(timeout=5) == "me too"
    assert _wait(lambda: _gauge(gw) == 0)
    with ws(gw, **AUTH) as conn:  # the places were given back
        conn.send("again")
        assert conn.recv(timeout=5) == "again"


def test_upgrade_on_a_route_without_upgrade_is_a_plain_request(
    stack: tuple[GatewayProcess, WsUpstream],
) -> None:
    gw, upstream = stack
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        sock.sendall(
            b"GET /open/x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b"plain\n")
    seen = upstream.plain[-1]
    assert "Upgrade" not in seen and "upgrade" not in seen.get("Connection", "").lower()


def test_upgrade_with_a_body_is_still_refused(stack: tuple[GatewayProcess, WsUpstream]) -> None:
    gw, upstream = stack
    before = len(upstream.handshakes)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        sock.sendall(
            b"GET /ws/room HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"X-API-Key: " + KEY.encode() + b"\r\nContent-Length: 5\r\n\r\nhello"
        )
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert len(upstream.handshakes) == before


def test_tunnels_end_at_their_lifetime_and_when_their_worker_reloads_or_stops() -> None:
    upstream = start_ws_upstream()
    gw = start_gateway(gateway_config(upstream, max_lifetime=2), workers=1, threads=1)
    try:
        with ws(gw, **AUTH) as conn:
            started = time.monotonic()
            with pytest.raises(ConnectionClosed):
                for _ in range(40):  # never idle: a message every 0.2 s, for up to 8 s
                    conn.send("busy")
                    assert conn.recv(timeout=5) == "busy"
                    time.sleep(0.2)
            assert 1.5 < time.monotonic() - started < 5
        assert _wait(lambda: "tunnel (websocket) ended: max_lifetime" in gw.log_text())
        with ws(gw, **AUTH) as conn:
            conn.send("before the reload")
            assert conn.recv(timeout=5) == "before the reload"
            gw.proc.send_signal(signal.SIGHUP)  # new workers; the old one is stopped
            with pytest.raises(ConnectionClosed):
                conn.recv(timeout=15)
        assert _wait(lambda: "tunnel (websocket) ended: worker_stopping" in gw.log_text())
        assert upstream.wait_ended(2, timeout=5)
        with ws(gw, **AUTH) as conn:
            conn.send("before the stop")
            assert conn.recv(timeout=5) == "before the stop"
            started = time.monotonic()
            gw.stop()  # SIGTERM: graceful, GW_GRACEFUL_TIMEOUT=5
            assert gw.proc.returncode == 0
            assert time.monotonic() - started < 4.5  # not held until the graceful timeout
            with pytest.raises(ConnectionClosed):
                conn.recv(timeout=5)
        assert upstream.wait_ended(3, timeout=5)
        assert gw.log_text().count("tunnel (websocket) ended: worker_stopping") == 2
    finally:
        gw.stop()
        upstream.close()


def test_a_tls_upstream_tunnel_echoes_and_closes_both_ways(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path)
    upstream = start_ws_upstream(tls=server_context(cert, key))
    config = gateway_config(upstream)
    config["upstreams"]["chat"]["tls"] = {"ca_file": str(cert)}
    gw = start_gateway(config, workers=1, threads=1)
    try:
        with ws(gw, **AUTH) as conn:
            conn.send("over tls")
            assert conn.recv(timeout=5) == "over tls"
            conn.send(b"\x01" * 100_000)
            assert conn.recv(timeout=5) == b"\x01" * 100_000
            conn.send("close")  # the upstream closes first
            with pytest.raises(ConnectionClosed) as closed:
                conn.recv(timeout=5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
        with ws(gw, **AUTH) as conn:
            conn.send("x")
            assert conn.recv(timeout=5) == "x"
            conn.socket.shutdown(socket.SHUT_RDWR)  # the client goes away without a word
            assert upstream.wait_ended(2, timeout=5)
    finally:
        gw.stop()
        upstream.close()


def test_through_the_nginx_drop_in(tmp_path: Path) -> None:
    """deploy/nginx/gw.conf as shipped passes the upgrade to gw and relays the tunnel; the
    handshake is authenticated by gw; plain requests on the same location stay plain."""
    nginx_bin = require_tool("nginx", "nginx", fail_on_ci=True)
    upstream = start_ws_upstream()
    sock = tmp_path / "gw.sock"
    gw = start_gateway(gateway_config(upstream), workers=1, threads=1, bind=f"unix:{sock}")
    nginx = None
    try:
        nginx = start_nginx(nginx_bin, tmp_path / "nginx", sock)
        wait_healthy_through(nginx, gw)
        url = f"ws://127.0.0.1:{nginx.port}/ws/room"
        with connect(url, additional_headers=AUTH, **connect_kwargs()) as conn:
            conn.send("through nginx")
            assert conn.recv(timeout=5) == "through nginx"
            conn.send(b"\x00\xff" * 5000)
            assert conn.recv(timeout=5) == b"\x00\xff" * 5000
        assert upstream.handshakes[-1]["X-User-Id"] == "alice"
        with pytest.raises(InvalidStatus) as refused:
            connect(url, **connect_kwargs())
        assert refused.value.response.status_code == 401
        assert requests.get(f"{nginx.url}/open/x", timeout=5).text == "plain\n"
        assert "upgrade" not in upstream.plain[-1].get("Connection", "").lower()
    finally:
        if nginx is not None:
            nginx.stop()
        gw.stop()
        upstream.close()


def _gauge(gw: GatewayProcess) -> float:
    text = requests.get(gw.url + "/metrics", timeout=5).text
    found = re.search(r"^gw_tunnels_open(?:\{[^}]*\})? (\S+)$", text, re.MULTILINE)
    assert found, text[:2000]
    return float(found.group(1))


def _wait(check: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        piece = sock.recv(65536)
        if not piece:
            break
        data += piece
    return data
