"""``server.deadline`` bounds every upstream exchange, head and body (issue 13, point 5): an
upstream that drips its answer kept a request for 75 s with ``deadline: 5`` and
``read_timeout: 2``, because the timeout was per read. A route's ``stream_timeout`` lifts the
bound for answers that legitimately take longer."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from tests.support.evil_upstream import EvilUpstream, start_evil_upstream
from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.rawhttp import get, parse_response

Stack = tuple[GatewayProcess, EvilUpstream]
DRIP = 0.25  # seconds between two bytes
BODY = 24  # bytes: 6 s of dripping


def dripped(data: bytes) -> list[bytes | float]:
    steps: list[bytes | float] = []
    for byte in data:
        steps += [bytes([byte]), DRIP]
    return steps


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[GatewayProcess, EvilUpstream]]:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BODY
    evil = start_evil_upstream(
        {
            "body": [head, *dripped(b"x" * BODY)],
            "head": dripped(head + b"x" * BODY),
        }
    )
    config = {
        "server": {"deadline": 2},
        "upstreams": {"svc": {"targets": [evil.url], "read_timeout": 1}},
        "routes": [
            {"name": "bounded", "path": "/case/**", "upstream": "svc"},
            {
                "name": "stream",
                "path": "/stream/**",
                "upstream": "svc",
                "rewrite": {"prefix": "/stream", "to": "/case"},
                "stream_timeout": 15,
            },
        ],
    }
    gw = start_gateway(config, workers=1)
    yield gw, evil
    gw.stop()
    evil.close()


def test_a_dripped_head_gets_504_at_the_deadline(
    stack: tuple[GatewayProcess, EvilUpstream],
) -> None:
    gw, _ = stack
    started = time.monotonic()
    answer = get(gw.port, "/case/head")
    took = time.monotonic() - started
    assert answer.status == 504
    assert answer.json()["error"] == "upstream_timeout"
    assert took < 4, f"held {took:.1f} s with deadline 2"


def test_a_dripped_body_is_cut_at_the_deadline(stack: Stack) -> None:
    gw, _ = stack
    started = time.monotonic()
    data = read_all(gw.port, b"GET /case/body HTTP/1.1\r\nHost: gw.test\r\n\r\n", 15)
    took = time.monotonic() - started
    answer = parse_response(data)
    assert answer.status == 200
    assert not answer.complete, "the client must see a broken answer, not a clean short one"
    assert took < 4, f"held {took:.1f} s with deadline 2"


def test_stream_timeout_lets_a_slow_body_finish(stack: Stack) -> None:
    gw, _ = stack
    data = read_all(gw.port, b"GET /stream/body HTTP/1.1\r\nHost: gw.test\r\n\r\n", 15)
    answer = parse_response(data)
    assert answer.status == 200
    assert answer.complete and answer.body == b"x" * BODY


def read_all(port: int, request: bytes, timeout: float) -> bytes:
    """Send ``request`` and read until the connection closes or a whole answer is in."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            _, _, rest = data.partition(b"\r\n\r\n")
            if rest and len(rest) >= BODY:
                break
    return data
