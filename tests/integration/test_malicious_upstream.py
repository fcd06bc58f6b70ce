"""A malicious upstream: for every hostile answer the client gets the documented answer, and
the next request to the same upstream gets its own answer, never bytes left over from the last.

One gateway per worker class (and the default one behind the shipped nginx drop-in), each
with one worker, so every request shares the same connection pool. The upstreams (plain and
TLS, tests/support/evil_upstream.py) record which TCP connection each request came on, so a
test can prove that a poisoned connection was never used again.

Documented answers: framing that gw and the upstream could read differently (two lengths,
a length and a transfer coding, a coding other than one ``chunked``, bare LF, obs-fold, a
status outside 100..599, 101, more than 5 interim answers) is a 502 ``upstream_bad_response``;
a head that does not arrive within the read timeout is a 504 ``upstream_timeout``; bytes
after a complete answer, or a body on a HEAD, 204 or 304 answer, are dropped along with
the connection; trailer fields are dropped (never passed on as header fields).
"""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11
import pytest

from tests.integration.test_deploy import require_tool, start_nginx, wait_healthy_through
from tests.support.evil_upstream import (
    CLOSE,
    EvilUpstream,
    Step,
    ok_answer,
    start_evil_upstream,
)
from tests.support.gateway import start_gateway
from tests.support.rawhttp import get, raw_request
from tests.support.tls import make_certificate, server_context

pytestmark = pytest.mark.integration  # starts gunicorn and nginx

POISON = ok_answer("POISONED")  # a whole answer that must never reach the next client
LATE = 0.1  # seconds between an answer and the bytes sent after it (a later TCP segment)
SETTLE = 0.35  # the test waits this long after a late-bytes case, so the bytes have arrived
BAD = "upstream_bad_response"
SLOW_TIMEOUT = 0.5  # the read timeout of the /slow route


def _head(status: str, *fields: str) -> bytes:
    return ("\r\n".join([f"HTTP/1.1 {status}", *fields]) + "\r\n\r\n").encode()


def _dripped(data: bytes, gap: float = 0.004) -> list[Step]:
    steps: list[Step] = []
    for byte in data:
        steps += [bytes([byte]), gap]
    return steps


EARLY_HINTS = _head("103 Early Hints", "Link: </style.css>; rel=preload")
TRAILERS = b"Set-Cookie: forged=1\r\nX-Trailer: 1\r\nLocation: /elsewhere\r\n\r\n"


@dataclass(frozen=True)
class Case:
    name: str
    script: list[Step]
    status: int
    body: bytes = b""  # for answers passed on
    error: str | None = None  # for answers the gateway refuses
    method: str = "GET"
    unusable: bool = True  # the connection must not carry the next request (else it must)
    late: bool = False
    route: str = ""  # "/slow": the route with a read timeout of SLOW_TIMEOUT
    absent: tuple[str, ...] = ()  # fields the client's answer must not carry


CASES = [
    # -- bytes after a complete answer -------------------------------------------------------
    Case("late_bytes", [ok_answer("first"), LATE, POISON], 200, b"first", late=True),
    Case("longer_than_length", [ok_answer("first") + POISON], 200, b"first"),
    Case("garbage_after_answer", [ok_answer("first") + b"garbage\r\n\r\n"], 200, b"first"),
    Case(
        "head_with_body",
        [_head("200 OK", "Content-Length: 8") + b"POISONED"],
        200,
        method="HEAD",
    ),
    Case(
        "head_with_late_body",
        [_head("200 OK", "Content-Length: 8"), LATE, POISON],
        200,
        method="HEAD",
        late=True,
    ),
    Case("no_content_then_answer", [_head("204 No Content") + POISON], 204),
    Case("no_content_then_late_answer", [_head("204 No Content"), LATE, POISON], 204, late=True),
    Case("not_modified_with_body", [_head("304 Not Modified") + b"POISONED"], 304),
    Case(
        "not_modified_then_late_answer", [_head("304 Not Modified"), LATE, POISON], 304, late=True
    ),
    # -- framing the gateway refuses ---------------------------------------------------------
    Case(
        "duplicate_length",
        [_head("200 OK", "Content-Length: 5", "Content-Length: 5") + b"first"],
        502,
        error=BAD,
    ),
    Case(
        "conflicting_length",
        [_head("200 OK", "Content-Length: 5", "Content-Length: 13") + b"first" + POISON],
        502,
        error=BAD,
    ),
    Case(
        "length_and_chunked",
        [_head("200 OK", "Content-Length: 5", "Transfer-Encoding: chunked") + b"0\r\n\r\nfirst"],
        502,
        error=BAD,
    ),
    Case(
        "chunked_and_length",
        [_head("200 OK", "Transfer-Encoding: chunked", "Content-Length: 5") + b"0\r\n\r\nfirst"],
        502,
        error=BAD,
    ),
    Case(
        "gzip_then_chunked",
        [_head("200 OK", "Transfer-Encoding: gzip, chunked") + b"5\r\nfirst\r\n0\r\n\r\n"],
        502,
        error=BAD,
    ),
    Case(
        "chunked_with_a_trailing_comma",
        [_head("200 OK", "Transfer-Encoding: chunked ,") + b"5\r\nfirst\r\n0\r\n\r\n"],
        502,
        error=BAD,
    ),
    Case(
        "chunked_in_http_1_0",
        [b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n0\r\n\r\n"],
        502,
        error=BAD,
    ),
    Case("bare_lf", [b"HTTP/1.1 200 OK\nContent-Length: 5\n\nfirst"], 502, error=BAD),
    Case(
        "bare_lf_in_field",
        [b"HTTP/1.1 200 OK\r\nX-A: 1\nContent-Length: 5\r\n\r\nfirst"],
        502,
        error=BAD,
    ),
    Case(
        "switching_protocols",
        [_head("101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade") + POISON],
        502,
        error=BAD,
    ),
    Case("interim_flood", [EARLY_HINTS * 6 + ok_answer("first")], 502, error=BAD),
    Case("status_below_100", [_head("099 Odd", "Content-Length: 5") + b"first"], 502, error=BAD),
    Case("status_above_599", [_head("600 Odd", "Content-Length: 5") + b"first"], 502, error=BAD),
    Case(
        "folded_field",
        [_head("200 OK", "X-A: 1", " 2", "Content-Length: 5") + b"first"],
        502,
        error=BAD,
    ),
    Case("space_before_colon", [_head("200 OK", "Content-Length : 5") + b"first"], 502, error=BAD),
    Case(
        "nul_in_value",
        [_head("200 OK", "X-A: a\x00b", "Content-Length: 5") + b"first"],
        502,
        error=BAD,
    ),
    Case(
        "length_overflow",
        [_head("200 OK", "Content-Length: 99999999999999999999") + b"first"],
        502,
        error=BAD,
    ),
    Case(
        "head_dripped_past_the_read_timeout",
        [*_dripped(_head("200 OK", "Content-Length: 5", "X-Slow: yes"), gap=0.05), b"first"],
        504,
        error="upstream_timeout",
        route="/slow",
    ),
    # -- odd but valid: passed on, and the connection may be kept ----------------------------
    Case("few_interim", [EARLY_HINTS * 5 + ok_answer("first")], 200, b"first", unusable=False),
    # an empty chunked body: the client's answer (chunked again, as gw frames a body of no
    # stated length) must end with its final chunk, or the next answer would be read as its body
    Case(
        "empty_chunked_body",
        [_head("200 OK", "Transfer-Encoding: chunked") + b"0\r\n\r\n"],
        200,
        b"",
        unusable=False,
    ),
    # -- trailer fields (RFC 9110 section 6.5.1: never merged into the header section) --------
    Case(
        "trailers_are_not_fields",
        [_head("200 OK", "Transfer-Encoding: chunked") + b"5\r\nfirst\r\n0\r\n" + TRAILERS],
        200,
        b"first",
        unusable=False,
        absent=("Set-Cookie", "X-Trailer", "Location"),
    ),
    Case(
        "late_trailers_are_not_fields",
        [
            _head("200 OK", "Transfer-Encoding: chunked") + b"5\r\nfirst\r\n",
            LATE,
            b"0\r\n",
            TRAILERS,
        ],
        200,
        b"first",
        unusable=False,
        absent=("Set-Cookie", "X-Trailer", "Location"),
    ),
    Case(
        "dripped_head",
        [*_dripped(_head("200 OK", "Content-Length: 7", "X-Slow: yes")), b"dripped"],
        200,
        b"dripped",
        unusable=False,
    ),
]
TLS_CASES = [
    case
    for case in CASES
    if case.name
    in {"late_bytes", "longer_than_length", "head_with_late_body", "no_content_then_late_answer"}
]
NGINX = "nginx"  # the default worker behind the shipped nginx drop-in
WORKERS = [None, "gw.edge.worker.BalancedThreadWorker", "sync"]
FRONTS = [*WORKERS, NGINX]
_tokens = itertools.count()


@pytest.fixture(scope="module")
def evil() -> Iterator[EvilUpstream]:
    scripts = {case.name: case.script for case in CASES}
    server = start_evil_upstream({**scripts, "answer_then_close": [ok_answer("first"), CLOSE]})
    yield server
    server.close()


@pytest.fixture(scope="module")
def evil_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EvilUpstream, Path]]:
    cert, key = make_certificate(tmp_path_factory.mktemp("evil-tls"))
    scripts = {case.name: case.script for case in TLS_CASES}
    server = start_evil_upstream(scripts, tls=server_context(cert, key))
    yield server, cert
    server.close()


def _config(evil: EvilUpstream, evil_tls: EvilUpstream) -> dict[str, Any]:
    def upstream(server: EvilUpstream) -> dict[str, Any]:
        return {"targets": [server.url], "pool_size": 4, "read_timeout": 3}

    slow = {"path": "/slow/**", "strip_prefix": "/slow", "read_timeout": SLOW_TIMEOUT}
    return {
        "upstreams": {"evil": upstream(evil), "evil_tls": upstream(evil_tls)},
        "routes": [
            {"name": "all", "path": "/**", "upstream": "evil"},
            {"name": "slow", "upstream": "evil", **slow},
            {"name": "tls", "path": "/tls/**", "upstream": "evil_tls", "strip_prefix": "/tls"},
        ],
    }


@dataclass(frozen=True)
class Front:
    port: int  # where clients connect: gunicorn's port, or nginx's in front of it


@pytest.fixture(scope="module", params=FRONTS, ids=["gevent", "gthread", "sync", "nginx"])
def gw(
    request: Any,
    evil: EvilUpstream,
    evil_tls: tuple[EvilUpstream, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Front]:
    config = _config(evil, evil_tls[0])
    trust = {"SSL_CERT_FILE": str(evil_tls[1])}  # the TLS upstream's self-signed certificate
    if request.param != NGINX:
        process = start_gateway(config, workers=1, worker_class=request.param, extra_env=trust)
        yield Front(process.port)
        process.stop()
        return
    nginx_path = require_tool("nginx", "nginx", fail_on_ci=True)
    directory = tmp_path_factory.mktemp("malicious-upstream-nginx")
    sock = directory / "gw.sock"
    process = start_gateway(config, workers=1, bind=f"unix:{sock}", wait=False, extra_env=trust)
    nginx = None
    try:
        nginx = start_nginx(nginx_path, directory / "nginx", sock)
        wait_healthy_through(nginx, process)
        yield Front(nginx.port)
    finally:
        if nginx is not None:
            nginx.stop()
        process.stop()


def _contained(front: Front, evil: EvilUpstream, case: Case, via: str = "") -> None:
    """The client gets the documented answer; the next client on the pool gets its own."""
    answer = get(front.port, f"{via}{case.route}/case/{case.name}", method=case.method)
    assert answer.status == case.status, answer.body
    if case.error:
        assert answer.json()["error"] == case.error
    else:
        assert answer.body == case.body
    assert [name for name in case.absent if answer.header(name) is not None] == []
    hostile_connection = evil.requests_for(f"/case/{case.name}")[-1].connection
    if case.late:
        time.sleep(SETTLE)

    token = f"next-{case.name}-{next(_tokens)}"
    following = get(front.port, f"{via}/ok/{token}")

    assert (following.status, following.body) == (200, token.encode())
    [seen] = evil.requests_for(f"/ok/{token}")  # the route strips the /tls prefix
    if case.unusable:
        assert seen.connection != hostile_connection, "a poisoned connection was reused"
    else:
        assert seen.connection == hostile_connection, "a clean connection was dropped"


def _reused(front: Front, evil: EvilUpstream, via: str = "") -> None:
    """Sequential clean answers all travel on one kept-alive connection."""
    tokens = [f"reuse-{next(_tokens)}" for _ in range(3)]
    for token in tokens:
        assert get(front.port, f"{via}/ok/{token}").body == token.encode()
    connections = {evil.requests_for(f"/ok/{token}")[0].connection for token in tokens}
    assert len(connections) == 1


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_answer_is_contained_and_next_request_gets_its_own(
    gw: Front, evil: EvilUpstream, case: Case
) -> None:
    """The client gets the documented answer; the next client on the pool gets its own."""
    _contained(gw, evil, case)


def test_pool_is_reused_for_clean_answers(gw: Front, evil: EvilUpstream) -> None:
    """The check before reuse keeps clean connections: sequential requests share one."""
    _reused(gw, evil)


def test_a_connection_the_upstream_closed_while_idle_is_not_used(
    gw: Front, evil: EvilUpstream
) -> None:
    """A POST (never sent twice) right after the upstream closed the idle connection succeeds."""
    assert get(gw.port, "/case/answer_then_close").body == b"first"
    time.sleep(SETTLE)  # the upstream's FIN has arrived
    token = f"post-{next(_tokens)}"
    request = f"POST /ok/{token} HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n"
    answer = raw_request(gw.port, f"{request}Content-Length: 4\r\n\r\nbody".encode())
    assert (answer.status, answer.body) == (200, token.encode())


@pytest.mark.parametrize("case", TLS_CASES, ids=[case.name for case in TLS_CASES])
def test_hostile_answer_over_tls_is_contained(
    gw: Front, evil_tls: tuple[EvilUpstream, Path], case: Case
) -> None:
    """The same over HTTPS: late TLS records spoil the connection as late bytes do."""
    _contained(gw, evil_tls[0], case, via="/tls")


def test_tls_pool_is_reused_for_clean_answers(
    gw: Front, evil_tls: tuple[EvilUpstream, Path]
) -> None:
    """TLS session tickets and the like never make a clean connection look spoiled."""
    _reused(gw, evil_tls[0], via="/tls")


def test_an_empty_chunked_answer_ends_before_the_next_on_a_kept_connection(
    gw: Front, evil: EvilUpstream
) -> None:
    """A kept-alive client reads an empty chunked answer to its end (the final chunk), then
    the next answer on the same connection as its own (h11 reads each as a client does; a
    server that closes after each answer, gunicorn's sync worker, gets a new connection)."""
    token = f"after-empty-{next(_tokens)}"
    answers = []
    client, sock = h11.Connection(h11.CLIENT), None
    try:
        for target in ("/case/empty_chunked_body", f"/ok/{token}"):
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
            request = h11.Request(method="GET", target=target, headers=[("Host", "gw.test")])
            sock.sendall(client.send(request) + client.send(h11.EndOfMessage()))
            status, body = 0, b""
            while True:
                event = client.next_event()
                if event is h11.NEED_DATA:
                    client.receive_data(sock.recv(65536))  # a missing end times out here
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
            answers.append((status, body))
            if client.our_state is h11.MUST_CLOSE:
                sock.close()
                client, sock = h11.Connection(h11.CLIENT), None
            else:
                client.start_next_cycle()
    finally:
        if sock is not None:
            sock.close()
    assert answers == [(200, b""), (200, token.encode())]
