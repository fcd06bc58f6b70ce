"""gw's own HTTP/1.1 server (gw.edge.connection) in real gunicorn workers, byte for byte.

One gateway (the default worker class) and one recording upstream serve the whole module.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.rawhttp import RawResponse, parse_response, raw_request
from tests.support.upstream import Upstream, start_upstream


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[GatewayProcess, Upstream]]:
    upstream = start_upstream()
    config = {
        "upstreams": {"svc": {"targets": [upstream.url]}},
        "routes": [{"name": "api", "path": "/api/**", "upstream": "svc"}],
    }
    gw = start_gateway(config, workers=1, extra_env={"GW_KEEPALIVE": "2"})
    yield gw, upstream
    gw.stop()
    upstream.close()


def read_responses(sock: socket.socket, count: int, timeout: float = 5.0) -> list[RawResponse]:
    """Read ``count`` complete responses from a kept-alive connection."""
    sock.settimeout(timeout)
    data = b""
    responses: list[RawResponse] = []
    while len(responses) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        while b"\r\n\r\n" in data:
            head, _, rest = data.partition(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            if len(rest) < length:
                break
            responses.append(parse_response(head + b"\r\n\r\n" + rest[:length]))
            data = rest[length:]
    return responses


def test_pipelined_requests_are_answered_in_order_on_one_connection(
    stack: tuple[GatewayProcess, Upstream],
) -> None:
    gw, _ = stack
    with socket.create_connection(("127.0.0.1", gw.port)) as sock:
        sock.sendall(
            b"GET /api/first HTTP/1.1\r\nHost: a\r\n\r\n"
            b"POST /api/second HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
            b"GET /api/third HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        first, second, third = read_responses(sock, 3)
    assert [r.status for r in (first, second, third)] == [200, 200, 200]
    assert [r.json()["target"] for r in (first, second, third)] == [
        "/api/first",
        "/api/second",
        "/api/third",
    ]
    assert second.json()["body_len"] == 5


def test_chunked_upload_reaches_the_upstream_whole(stack: tuple[GatewayProcess, Upstream]) -> None:
    gw, upstream = stack
    response = raw_request(
        gw.port,
        b"POST /api/up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"
        b"\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    assert response.status == 200
    assert upstream.last().body_len == 11
    # A body within server.request_buffer_bytes is read whole first and sent with its length.
    assert upstream.last().header("Content-Length") == "11"
    assert upstream.last().header("Transfer-Encoding") is None


def test_a_chunked_upload_larger_than_the_buffer_streams_chunked(
    stack: tuple[GatewayProcess, Upstream],
) -> None:
    gw, upstream = stack
    piece = b"x" * 50_000
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(3))
    response = raw_request(
        gw.port,
        b"POST /api/up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"
        b"\r\n" + chunks + b"0\r\n\r\n",
    )
    assert response.status == 200
    assert upstream.last().body_len == 150_000
    assert ("Transfer-Encoding", "chunked") in upstream.last().headers


def test_expect_100_continue_is_answered_before_the_body_is_sent(
    stack: tuple[GatewayProcess, Upstream],
) -> None:
    gw, _ = stack
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        sock.sendall(
            b"PUT /api/up HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n"
            b"Connection: close\r\n\r\n"
        )
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"data")
        response = parse_response(sock.recv(65536))
    assert response.status == 200
    assert response.json()["body_len"] == 4


def test_head_answers_carry_no_body_and_keep_the_connection(
    stack: tuple[GatewayProcess, Upstream],
) -> None:
    gw, _ = stack
    with socket.create_connection(("127.0.0.1", gw.port)) as sock:
        sock.sendall(
            b"HEAD /api/h HTTP/1.1\r\nHost: a\r\n\r\nGET /api/g HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        sock.settimeout(5)
        data = b""
        while data.count(b"HTTP/1.1 200") < 2 or not data.endswith(b"}"):
            data += sock.recv(65536)
    _, _, rest = data.partition(b"\r\n\r\n")
    assert rest.startswith(b"HTTP/1.1 200")  # nothing between the HEAD answer and the next


def test_http_1_0_gets_the_connection_closed_after_the_answer(
    stack: tuple[GatewayProcess, Upstream],
) -> None:
    gw, _ = stack
    response = raw_request(gw.port, b"GET /api/old HTTP/1.0\r\n\r\n")
    assert response.status == 200
    assert response.header("Connection") == "close"
    assert response.complete


@pytest.mark.parametrize(
    "request_bytes",
    [
        # Content-Length and Transfer-Encoding together: the classic smuggling vector
        b"POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n"
        b"\r\n0\r\n\r\nGET /api/smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        # two different lengths
        b"POST /api/x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd",
        # a transfer coding that is not chunked last
        b"POST /api/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        # obsolete line folding
        b"GET /api/x HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n",
        # a bare LF inside the head
        b"GET /api/x HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n",
        # whitespace between the name and the colon
        b"GET /api/x HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\nhello",
    ],
    ids=["cl-and-te", "two-lengths", "te-not-chunked", "obs-fold", "bare-lf", "space-colon"],
)
def test_ambiguous_framing_is_refused_with_json_400_and_never_forwarded(
    stack: tuple[GatewayProcess, Upstream], request_bytes: bytes
) -> None:
    gw, upstream = stack
    before = upstream.count()
    response = raw_request(gw.port, request_bytes)
    assert response.status == 400
    assert response.json()["error"] == "bad_request"
    assert response.header("Connection") == "close"
    assert upstream.count() == before


def test_header_names_with_underscores_never_reach_the_upstream(
    stack: tuple[GatewayProcess, Upstream],
) -> None:
    gw, upstream = stack
    response = raw_request(
        gw.port,
        b"GET /api/u HTTP/1.1\r\nHost: a\r\nX_Custom_Thing: spoof\r\nX-Other: kept\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert response.status == 200
    names = upstream.last().header_names()
    assert "x-other" in names
    assert not {"x_custom_thing", "x-custom-thing"} & names


def test_request_line_over_the_limit_is_414(stack: tuple[GatewayProcess, Upstream]) -> None:
    gw, upstream = stack
    before = upstream.count()
    response = raw_request(gw.port, b"GET /api/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    assert response.status == 414
    assert response.json()["error"] == "uri_too_long"
    assert upstream.count() == before


def test_an_idle_or_slow_head_is_closed_after_the_keepalive_time(
    stack: tuple[GatewayProcess, Upstream],
) -> None:
    gw, _ = stack  # GW_KEEPALIVE=2
    with socket.create_connection(("127.0.0.1", gw.port)) as sock:
        sock.settimeout(10)
        started = time.monotonic()
        sock.sendall(b"GET /api/slow HTTP/1.1\r\n")  # and never the rest of the head
        assert sock.recv(65536) == b""
        assert time.monotonic() - started < 6


def test_a_broken_upstream_body_leaves_the_client_a_visibly_broken_answer(
    stack: tuple[GatewayProcess, Upstream],
) -> None:
    gw, _ = stack
    response = raw_request(gw.port, b"GET /api/__truncate HTTP/1.1\r\nHost: a\r\n\r\n")
    assert response.status == 200
    assert not response.complete  # the connection ended before the announced length


def test_a_pipelined_burst_does_not_hold_up_another_client(upstream: Upstream) -> None:
    """Every connection of a worker gets its turn: one client's 1,000 pipelined requests,
    already read and parsed, are not all answered before another client's single one."""
    burst = 1000
    config = {
        "upstreams": {"svc": {"targets": [upstream.url]}},
        "routes": [{"name": "api", "path": "/api/**", "upstream": "svc"}],
    }
    gw = start_gateway(config, workers=1, extra_env={"GW_KEEPALIVE_REQUESTS": "5000"})
    request = b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n"
    marker = b"HTTP/1.1 200"
    seen = [0]

    def count_answers(sock: socket.socket) -> None:
        sock.settimeout(10)
        tail = b""
        while seen[0] < burst:
            chunk = sock.recv(65536)
            if not chunk:
                return
            seen[0] += (tail + chunk).count(marker)
            tail = chunk[-(len(marker) - 1) :]

    try:
        with (
            socket.create_connection(("127.0.0.1", gw.port)) as greedy,
            socket.create_connection(("127.0.0.1", gw.port)) as patient,
        ):
            for sock in (greedy, patient):  # both accepted and kept alive before the race
                sock.sendall(request)
                assert read_responses(sock, 1)[0].status == 200
            reader = threading.Thread(target=count_answers, args=(greedy,))
            reader.start()
            greedy.sendall(request * burst)
            deadline = time.monotonic() + 5
            while seen[0] == 0 and time.monotonic() < deadline:
                time.sleep(0.0005)  # the worker is busy with the burst
            patient.sendall(request)
            answer = read_responses(patient, 1)
            answered_before = seen[0]
            reader.join(timeout=30)
    finally:
        gw.stop()
    assert answer[0].status == 200
    assert seen[0] == burst
    assert answered_before < burst // 2, answered_before  # without turns: all 1,000
