"""gw.upstream.wire: upstream responses read from a real socket pair, request heads built and
checked."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gw.core.headers import NAME_CACHE_SIZE
from gw.errors import InvalidHeader
from gw.upstream import wire
from gw.upstream.wire import (
    BodyBrokenOff,
    MalformedResponse,
    Response,
    UpstreamClosed,
    request_head,
    send_request,
)

Pair = tuple[socket.socket, socket.socket]


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.settimeout(5)
    yield ours, theirs
    ours.close()
    theirs.close()


def answer(pair: Pair, data: bytes, head: bool = False) -> Response:
    """The upstream sends ``data`` and closes its side; read it as the response to GET/HEAD."""
    ours, theirs = pair
    theirs.sendall(data)
    theirs.shutdown(socket.SHUT_WR)
    return Response(ours, head_request=head)


def test_content_length_body_with_repeated_headers_kept_apart(pair: Pair) -> None:
    response = answer(
        pair,
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nhello",
    )
    assert response.status == 200
    assert [v for n, v in response.headers if n == "set-cookie"] == ["a=1", "b=2"]
    assert b"".join(response.body()) == b"hello"
    assert response.reusable


def test_names_come_in_lower_case_and_their_table_stays_bounded(pair: Pair) -> None:
    """Names are compared as they come (no lower-casing downstream): every spelling of a name
    is one name; an upstream sending new names forever fills a bounded table, then the names
    are still converted."""
    response = answer(
        pair, b"HTTP/1.1 200 OK\r\nX-Trace: 1\r\nx-TRACE: 2\r\nContent-Length: 0\r\n\r\n"
    )
    assert response.headers == [("x-trace", "1"), ("x-trace", "2"), ("content-length", "0")]
    for batch in range(NAME_CACHE_SIZE // 90 + 2):
        ours, theirs = socket.socketpair()
        with ours, theirs:
            fields = b"".join(b"X-N%d-%d: v\r\n" % (batch, i) for i in range(90))
            theirs.sendall(b"HTTP/1.1 204 No Content\r\n" + fields + b"\r\n")
            names = [n for n, _ in Response(ours, head_request=False).headers]
        assert names == [f"x-n{batch}-{i}" for i in range(90)]
    assert len(wire._NAMES) <= NAME_CACHE_SIZE


@pytest.mark.parametrize("coding", [b"chunked", b"Chunked", b" chunked "])
def test_chunked_body_is_passed_decoded_of_its_framing(pair: Pair, coding: bytes) -> None:
    response = answer(
        pair,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: %s\r\n\r\n5\r\nhello\r\n0\r\n\r\n" % coding,
    )
    assert b"".join(response.body()) == b"hello"
    assert response.reusable


@pytest.mark.parametrize("late", [False, True])
def test_trailer_fields_are_never_header_fields(pair: Pair, late: bool) -> None:
    # APPSEC: RFC 9110 section 6.5.1: trailers are not merged into the header section; an
    # answer read whole (trailers in the same read as the head) was passed on with them.
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n"
    trailer = b"0\r\nSet-Cookie: forged=1\r\nLocation: /elsewhere\r\n\r\n"
    ours, theirs = pair
    if late:
        theirs.sendall(head)
        response = Response(ours, head_request=False)
        theirs.sendall(trailer)
    else:
        response = answer(pair, head + trailer)
    assert b"".join(response.body()) == b"first"
    assert response.headers == [("transfer-encoding", "chunked")]
    assert response.complete and response.reusable


def test_body_until_close_is_complete_at_eof_and_never_reused(pair: Pair) -> None:
    response = answer(pair, b"HTTP/1.1 200 OK\r\n\r\nhello world")
    assert b"".join(response.body()) == b"hello world"
    assert not response.reusable


def test_interim_100_continue_is_skipped(pair: Pair) -> None:
    response = answer(
        pair, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
    )
    assert response.status == 201
    assert response.headers == [("content-length", "2")]
    assert b"".join(response.body()) == b"ok"


def test_head_response_has_no_body_whatever_its_length_says(pair: Pair) -> None:
    response = answer(pair, b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n", head=True)
    assert b"".join(response.body()) == b""
    assert response.reusable


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n",  # bytes after it
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokgarbage\r\n\r\n",
    ],
    ids=["connection-close", "http-1.0", "trailing-bytes", "trailing-garbage"],
)
def test_connections_that_cannot_carry_another_request_are_not_reused(
    pair: Pair, data: bytes
) -> None:
    response = answer(pair, data)
    assert b"".join(response.body()) == b"ok"
    assert not response.reusable


@pytest.mark.parametrize(
    ("data", "head"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nPOISONED", True),
        (b"HTTP/1.1 200 OK\r\n\r\nPOISONED", True),
        (b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 8\r\n\r\nPOISONED", False),
    ],
    ids=["head-with-body", "head-with-unframed-body", "204-then-answer", "304-with-body"],
)
def test_bodies_where_none_may_be_are_dropped_with_the_connection(
    pair: Pair, data: bytes, head: bool
) -> None:
    """A body on a HEAD, 204 or 304 answer is never passed on, and the connection is not reused."""
    response = answer(pair, data, head=head)
    assert b"".join(response.body()) == b""
    assert not response.reusable


@pytest.mark.parametrize(
    ("data", "head"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", False),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n",
            False,
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nPOISONED", True),
        (b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", False),
    ],
    ids=["length", "chunked", "connection-close", "trailing-bytes", "head-with-body", "204-then"],
)
def test_an_answer_in_hand_is_what_its_body_would_yield(data: bytes, head: bool) -> None:
    """``in_hand()`` (the pipeline's path for an answer that came whole with its head) gives
    the same bytes, and the same verdict on reusing the connection, as reading ``body()``."""
    read = []
    for take in (lambda r: b"".join(r.body()), lambda r: b"".join(r.in_hand())):
        ours, theirs = socket.socketpair()
        with ours, theirs:
            ours.settimeout(5)
            response = answer((ours, theirs), data, head=head)
            assert response.complete
            read.append((take(response), response.reusable))
    assert read[0] == read[1]


def test_up_to_five_interim_answers_are_skipped(pair: Pair) -> None:
    hint = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
    response = answer(pair, hint * 5 + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert (response.status, response.headers) == (200, [("content-length", "2")])
    assert b"".join(response.body()) == b"ok"
    assert response.reusable


DRIPPED = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Slow: yes\r\n\r\nok"


def _drip(
    theirs: socket.socket, data: bytes, gap: float, stop: threading.Event
) -> threading.Thread:
    def run() -> None:
        for byte in data:
            if stop.wait(gap):
                return
            try:
                theirs.sendall(bytes([byte]))
            except OSError:
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_head_dripped_within_the_read_timeout_is_read(pair: Pair) -> None:
    ours, theirs = pair
    stop = threading.Event()
    thread = _drip(theirs, DRIPPED, 0.003, stop)
    response = Response(ours, head_request=False)
    assert response.status == 200
    assert b"".join(response.body()) == b"ok"
    assert ours.gettimeout() == 5  # the body was read with the read timeout again
    thread.join(5)


def test_a_head_dripped_past_the_read_timeout_times_out(pair: Pair) -> None:
    """Every byte comes well within the read timeout, but the whole head does not."""
    ours, theirs = pair
    ours.settimeout(0.5)
    stop = threading.Event()
    thread = _drip(theirs, DRIPPED, 0.05, stop)  # about 2.5 s in all
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        Response(ours, head_request=False)
    assert time.monotonic() - started < 1.5
    stop.set()
    thread.join(5)


def test_short_body_is_broken_off_not_clean(pair: Pair) -> None:
    response = answer(pair, b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nhello")
    with pytest.raises(BodyBrokenOff):
        b"".join(response.body())


def test_missing_final_chunk_is_broken_off(pair: Pair) -> None:
    response = answer(pair, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    with pytest.raises(BodyBrokenOff):
        b"".join(response.body())


def test_close_before_any_byte_is_upstream_closed(pair: Pair) -> None:
    with pytest.raises(UpstreamClosed):
        answer(pair, b"")


@pytest.mark.parametrize(
    "data",
    [
        b"HELLO\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nX-A: 1\r\n" + b"X-B: 2\r\n" * 120 + b"\r\n",
        b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Le",  # the head is cut off
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
        b"HTTP/1.1 200 OK\r\nX-A: 1\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 103 Early Hints\r\n\r\n" * 6 + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 099 Odd\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 600 Odd\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked , \r\n\r\n2\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    ],
    ids=[
        "not-http",
        "cl-and-te",
        "two-lengths",
        "too-many-headers",
        "huge-head",
        "101",
        "cut",
        "te-and-cl",
        "same-length-twice",
        "bare-lf",
        "bare-lf-in-field",
        "six-interim",
        "status-099",
        "status-600",
        "te-gzip-chunked",
        "te-chunked-comma",
        "te-identity",
        "te-twice",
        "te-in-http-1.0",
    ],
)
def test_invalid_or_oversized_answers_are_malformed(pair: Pair, data: bytes) -> None:
    with pytest.raises(MalformedResponse):
        answer(pair, data)


def _head_of(size: int, fields: int) -> bytes:
    """A 200 head of exactly ``size`` bytes (status line and blank line included) with
    ``fields`` header fields, ``Content-Length: 2`` among them."""
    status, length = b"HTTP/1.1 200 OK\r\n", b"Content-Length: 2\r\n"
    room = size - len(status) - len(length) - 2  # for fields - 1 fields: "X-nnnnn: ...\r\n"
    each, extra = divmod(room, fields - 1)
    lines = [b"X-%05d: %s\r\n" % (n, b"a" * (each - 11 + (n < extra))) for n in range(fields - 1)]
    head = status + b"".join(lines) + length + b"\r\n"
    assert len(head) == size
    return head


def _dribbled(pair: Pair, data: bytes, piece: int) -> Response:
    """As ``answer``, with ``data`` sent ``piece`` bytes at a time (several reads)."""
    ours, theirs = pair

    def send() -> None:
        for start in range(0, len(data), piece):
            theirs.sendall(data[start : start + piece])
            time.sleep(0.001)
        theirs.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        return Response(ours, head_request=False)
    finally:
        sender.join()


@pytest.mark.parametrize("piece", [1 << 20, 4096])
def test_a_head_of_up_to_64_kib_and_100_fields_is_read(pair: Pair, piece: int) -> None:
    """The limits are http.client's: 100 fields, and 64 KiB for the head, its status line
    and its blank line included, however many reads it comes in."""
    response = _dribbled(pair, _head_of(wire.MAX_HEAD_BYTES, 100) + b"ok", piece)
    assert response.status == 200 and len(response.headers) == 100
    assert b"".join(response.body()) == b"ok"


@pytest.mark.parametrize("piece", [1 << 20, 4096])
@pytest.mark.parametrize(("size", "fields"), [(1 << 16, 101), ((1 << 16) + 1, 60)])
def test_a_head_over_64_kib_or_100_fields_is_malformed(
    pair: Pair, piece: int, size: int, fields: int
) -> None:
    with pytest.raises(MalformedResponse):
        _dribbled(pair, _head_of(size, fields) + b"ok", piece)


def test_bad_chunk_size_is_malformed_while_reading_the_body(pair: Pair) -> None:
    ours, theirs = pair
    theirs.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    response = Response(ours, head_request=False)
    theirs.sendall(b"zz\r\nhello\r\n")
    with pytest.raises(MalformedResponse):
        b"".join(response.body())


def test_request_head_adds_host_length_and_identity_encoding_only_when_missing() -> None:
    head = request_head("POST", "/a?b=%2f", {"X-A": "1"}, "up:8080", chunked=False, no_body=True)
    assert head == (
        b"POST /a?b=%2f HTTP/1.1\r\nX-A: 1\r\nHost: up:8080\r\nContent-Length: 0\r\n"
        b"Accept-Encoding: identity\r\n\r\n"
    )
    given = {"Host": "h", "Accept-Encoding": "gzip"}
    head = request_head("GET", "/", given, "up:8080", chunked=True, no_body=False)
    assert head == (
        b"GET / HTTP/1.1\r\nHost: h\r\nAccept-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("method", "target", "headers"),
    [
        ("GET", "/a", {"X-A": "1\r\nX-Injected: yes"}),
        ("GET", "/a", {"X-A": "1\nX-Injected: yes"}),
        ("GET", "/a", {"X A": "1"}),
        ("GET", "/a", {"X-A": "nul\x00"}),
        ("GET", "/a", {"X-A\nX-Injected": "yes"}),  # a newline inside a name
        ("GET", "/a", {"X-A": "1", "X: Y": "2"}),  # a name holding ": "
        ("GET", "/a", {"": "1"}),
        ("GET", "/a", {"X-A": "1", "X-B": "2\r"}),  # only the last value is bad
        ("GET", "/a b", {}),
        ("GET", "/a\r\nX: y", {}),
        ("G T", "/a", {}),
    ],
)
def test_request_head_refuses_what_would_break_the_framing(
    method: str, target: str, headers: dict[str, str]
) -> None:
    with pytest.raises(InvalidHeader):
        request_head(method, target, headers, "up", chunked=False, no_body=True)


def test_a_checked_list_of_names_vouches_for_no_other_headers() -> None:
    """The names checked once are kept, joined one a line: a name holding that newline joins
    to the same string as two checked names, and is still refused; so is a bad list, however
    often it comes, and past the table's bound every list is still checked."""
    assert request_head("GET", "/", {"X-A": "1", "X-B": "2"}, "up", False, True)
    for _ in range(2):
        with pytest.raises(InvalidHeader):
            request_head("GET", "/", {"X-A\nX-B": "1"}, "up", False, True)
        with pytest.raises(InvalidHeader):
            request_head("GET", "/", {"X-A": "1", "X B": "2"}, "up", False, True)
    for i in range(NAME_CACHE_SIZE + 10):
        head = request_head("GET", "/", {f"X-{i}": "1", "HOST": "h"}, "up", False, True)
        fields = f"X-{i}: 1\r\nHOST: h\r\nAccept-Encoding: identity\r\n"
        assert head == f"GET / HTTP/1.1\r\n{fields}\r\n".encode()
    assert len(wire._NAME_LISTS) <= NAME_CACHE_SIZE
    with pytest.raises(InvalidHeader):
        request_head("GET", "/", {"X-A": "1", "X B": "2"}, "up", False, True)


def test_streamed_chunked_body_is_framed(pair: Pair) -> None:
    ours, theirs = pair
    send_request(ours, b"HEAD\r\n\r\n", iter([b"hello", b"", b" world"]), chunked=True)
    ours.shutdown(socket.SHUT_WR)
    received = b""
    while data := theirs.recv(65536):
        received += data
    assert received == b"HEAD\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"


def _reference_head(method: str, target: str, headers: dict[str, str], host: str) -> bytes:
    """request_head as it was written first, one check per header (the differential's oracle)."""
    token = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
    if re.search(r"[\x00-\x20\x7f]", target) or not token.fullmatch(method):
        raise InvalidHeader("target")
    lines, seen = [f"{method} {target} HTTP/1.1"], set()
    for name, value in headers.items():
        if not token.fullmatch(name) or re.search(r"[\x00\r\n]", value):
            raise InvalidHeader(name)
        lines.append(f"{name}: {value}")
        seen.add(name.lower())
    if "host" not in seen:
        lines.append(f"Host: {host}")
    if method in ("POST", "PUT", "PATCH") and "content-length" not in seen:
        lines.append("Content-Length: 0")
    if "accept-encoding" not in seen:
        lines.append("Accept-Encoding: identity")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")


_PIECES = st.sampled_from(["X-A", "host", "Content-Length", "accept-encoding", "a", ":", " "])
_NAMES = st.lists(st.one_of(_PIECES, st.sampled_from(["\r", "\n", "\x00", "é", "1"])), max_size=4)


@given(
    method=st.sampled_from(["GET", "POST", "G T"]),
    headers=st.dictionaries(
        _NAMES.map("".join),
        st.text(alphabet="ab :\r\n\x00\t", max_size=6),
        max_size=5,
    ),
)
def test_request_head_agrees_with_one_check_per_header(
    method: str, headers: dict[str, str]
) -> None:
    try:
        expected: bytes | None = _reference_head(method, "/t", headers, "up:1")
    except InvalidHeader:
        expected = None
    try:
        got: bytes | None = request_head(method, "/t", headers, "up:1", chunked=False, no_body=True)
    except InvalidHeader:
        got = None
    assert got == expected
