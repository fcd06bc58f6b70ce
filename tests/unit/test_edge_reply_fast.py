"""The compiled answer (gw/edge/_replyfields.c ``answer``) sends what ``Reply.send``'s Python
form sends, byte for byte, and leaves the reply in the same state (the connection's fate, the
body's framing and bytes sent) or raises the same error, for any status, fields, request and
list of chunks; what it declines, the Python form sends as before; where it is not built, the
Python form sends every answer.

CI builds it and sets ``GW_REQUIRE_COMPILED=1`` (see test_accesslog_compiled.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gw.edge import reply
from gw.edge.reply import Reply
from gw.edge.request import Message

compiled = pytest.mark.skipif(
    reply._compiled_answer is reply._not_compiled,
    reason="gw.edge._replyfields is not built here (no C compiler at install)",
)
Fields = list[tuple[str, str]]
DATE = "Sun, 06 Dec 2026 18:02:44 GMT"
COMPILED_ANSWER = reply._compiled_answer


@pytest.fixture(autouse=True)
def names_met_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test meets its names in tables of its own (see test_edge_reply_compiled.py); the
    clock does not tick between the two forms."""
    monkeypatch.setattr(reply, "_PLAIN_NAMES", {})
    monkeypatch.setattr(reply, "_SEEN", {})
    monkeypatch.setattr(reply, "_http_date", lambda: DATE)


def test_ci_has_the_compiled_form() -> None:
    if os.environ.get("GW_REQUIRE_COMPILED") != "1":
        pytest.skip("only where the build is required (CI)")
    assert reply._compiled_answer is not reply._not_compiled
    from gw.edge import _replyfields

    assert reply._compiled_answer is _replyfields.answer


class Wire:
    """A client's socket as ``send_all`` uses it: everything written, in order."""

    def __init__(self, takes: int = 1 << 30) -> None:
        self.data = b""
        self.takes = takes  # how many bytes one ``send`` takes

    def send(self, data: bytes) -> int:
        taken = bytes(data[: self.takes])
        self.data += taken
        return len(taken)

    def sendall(self, data: Any) -> None:
        self.data += bytes(data)


Outcome = tuple[bytes, tuple[object, ...] | type[Exception], bool]


def sent(
    headers: Fields,
    body: Iterable[bytes],
    *,
    fast: bool,
    status: str | None = "200 OK",
    version: str = "1.1",
    method: str = "GET",
    keep_alive: bool = True,
    takes: int = 1 << 30,
) -> Outcome:
    """What the client reads when the app answers ``status`` (None: the app never called
    ``start_response``), the reply's state after ``send`` (or the error it raised), and whether
    the compiled answer sent it. ``fast``: with the compiled answer, else the Python form."""
    message = Message()
    message.keep_alive = True
    message.version = version
    message.method = method
    wire = Wire(takes)
    answer = Reply(wire, message, keep_alive=keep_alive)  # type: ignore[arg-type]
    if status is not None:
        answer.start_response(status, headers)
    made: list[object] = []

    def spy(*args: Any) -> Any:
        result = COMPILED_ANSWER(*args) if fast else None
        made.append(result)
        return result

    reply._compiled_answer = spy
    try:
        answer.send(body)
        state: tuple[object, ...] | type[Exception] = (
            answer.keep_alive,
            answer.started,
            answer._sent,
            answer._length,
            answer._chunked,
            answer._bodyless,
            answer.switched,
        )
    except (ValueError, UnicodeEncodeError) as ex:
        state = type(ex)
    finally:
        reply._compiled_answer = COMPILED_ANSWER
    return wire.data, state, made[0] is not None if made else False


def both(headers: Fields, body: list[bytes], **request: Any) -> tuple[Outcome, Outcome]:
    """The Python form's outcome (which meets the names first, as a first answer would), then
    the compiled answer's."""
    python = sent(headers, body, fast=False, **request)
    return python, sent(headers, list(body), fast=True, **request)


@compiled
def test_the_usual_answer_is_sent_whole_by_the_compiled_form() -> None:
    headers = [("content-type", "text/plain"), ("content-length", "5"), ("x-a", "1")]
    python, fast = both(headers, [b"hel", b"lo"])
    assert fast == (*python[:2], True)
    data, state, _ = fast
    assert data == (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\nx-a: 1\r\n"
        b"Date: " + DATE.encode() + b"\r\nConnection: keep-alive\r\n\r\nhello"
    )
    assert state == (True, True, 5, 5, False, False, False)


@compiled
def test_a_chunked_answer_frames_each_chunk_and_ends_with_the_final_one() -> None:
    python, fast = both([], [b"a", b"", b"x" * 300])
    assert fast == (*python[:2], True)
    data, state, _ = fast
    assert b"chunked\r\nConnection: keep-alive\r\n\r\n1\r\na\r\n12c\r\n" in data
    assert data.endswith(b"x" * 300 + b"\r\n0\r\n\r\n")
    assert state == (True, True, 301, None, True, False, False)


@compiled
@pytest.mark.parametrize("body", [[], [b""], [b"", b""]])
def test_an_empty_chunked_body_still_gets_its_final_chunk(body: list[bytes]) -> None:
    # APPSEC: without it, the client reads the next answer on the connection as this body.
    python, fast = both([], body)
    assert fast == (*python[:2], True)
    assert fast[0].endswith(
        b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n0\r\n\r\n"
    )
    assert fast[1] == (True, True, 0, None, True, False, False)


@compiled
@pytest.mark.parametrize(
    ("length", "body", "wire_body", "state"),
    [
        ("5", [b"hello world"], b"hello", (False, True, 5, 5, False, False, False)),
        ("5", [b"hel", b"lo!", b"more"], b"hello", (False, True, 5, 5, False, False, False)),
        ("5", [b"hello"], b"hello", (True, True, 5, 5, False, False, False)),
        ("5", [b"hel"], b"hel", (False, True, 3, 5, False, False, False)),
        ("5", [], b"", (False, True, 0, 5, False, False, False)),
        ("0", [b"x"], b"", (False, True, 0, 0, False, False, False)),
        ("0", [], b"", (True, True, 0, 0, False, False, False)),
    ],
)
def test_never_more_than_the_length_announced_and_a_cut_or_short_body_ends_the_connection(
    length: str, body: list[bytes], wire_body: bytes, state: tuple[object, ...]
) -> None:
    # APPSEC: bytes past the Content-Length would be read as the next answer.
    python, fast = both([("Content-Length", length)], body)
    assert fast == (*python[:2], True)
    assert fast[0].endswith(b"\r\n\r\n" + wire_body) and fast[1] == state


@compiled
@pytest.mark.parametrize(
    "request_",
    [
        {"method": "HEAD"},
        {"status": "204 No Content"},
        {"status": "304 Not Modified"},
        {"method": "HEAD", "headers": [("Content-Length", "9")]},
    ],
)
def test_an_answer_without_a_body_writes_none_and_keeps_the_connection(
    request_: dict[str, Any],
) -> None:
    headers = request_.pop("headers", [])
    python, fast = both(headers, [b"body"], **request_)
    assert fast == (*python[:2], True)
    assert fast[0].endswith(b"Connection: keep-alive\r\n\r\n")
    assert fast[1][0] is True and fast[1][2] == 0  # type: ignore[index]


@compiled
def test_an_http_10_answer_without_a_length_ends_the_connection() -> None:
    python, fast = both([], [b"abc"], version="1.0")
    assert fast == (*python[:2], True)
    assert fast[0].endswith(b"Connection: close\r\n\r\nabc")
    assert fast[1] == (False, True, 3, None, False, False, False)


@compiled
def test_what_one_send_leaves_is_sent_all_the_same() -> None:
    python, fast = both([("Content-Length", "4")], [b"ab", b"cd"], takes=7)
    assert fast == (*python[:2], True)


@compiled
@pytest.mark.parametrize(
    ("body", "why"),
    [
        ((b"ok",), "a tuple"),
        ([bytearray(b"ok")], "a chunk that is not bytes"),
        ([b"ok", memoryview(b"ok")], "a later chunk that is not bytes"),
        ([b"x" * (1 << 20), b"y"], "a body over the size sent whole"),
    ],
)
def test_an_unusual_body_is_the_python_forms(body: Any, why: str) -> None:
    python = sent([], body, fast=False)
    fast = sent([], body, fast=True)
    assert fast == python, why
    assert not fast[2], why


@compiled
def test_a_body_at_the_size_sent_whole_is_the_compiled_forms() -> None:
    body = [b"x" * ((1 << 20) - 9)]  # "ffff7\r\n" and "\r\n" make it 1 MiB
    python, fast = both([], body)
    assert fast == (*python[:2], True)
    python, fast = both([], [b"x" * ((1 << 20) - 8)])
    assert fast == python and not fast[2]


@compiled
@pytest.mark.parametrize(
    ("headers", "status", "why"),
    [
        ([("Connection", "close")], "200 OK", "a Connection field"),
        ([("X-A", "a\r\nX-Forged: 1")], "200 OK", "a CR or LF in a value"),
        ([("Content-Length", "2"), ("content-length", "2")], "200 OK", "two lengths"),
        ([("X-A", "snow \u2603")], "200 OK", "beyond Latin-1"),
        ([], "200 OK\r\nX-Forged: 1", "a CR or LF in the status"),
        ([], "101 Switching Protocols", "a 101"),
        ([], None, "no start_response"),
    ],
)
def test_a_head_the_compiled_form_declines_is_sent_or_refused_by_the_python_form(
    headers: Fields, status: str | None, why: str
) -> None:
    python, fast = both(headers, [b"ok"], status=status)
    assert fast == python, why
    assert not fast[2], why


def test_an_app_body_that_breaks_off_is_the_python_forms() -> None:
    def broken() -> Iterator[bytes]:
        yield b"first"
        raise OSError("the upstream broke off")

    python = sent([], broken(), fast=False)
    fast = sent([], broken(), fast=True)
    assert fast == python
    assert python[0].endswith(b"5\r\nfirst\r\n") and python[1][0] is False  # type: ignore[index]


def test_without_the_compiled_form_the_answers_are_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    headers = [("content-length", "2"), ("x-a", "1")]
    sent(headers, [b"ok"], fast=True)  # the names are met
    with_it = sent(headers, [b"ok"], fast=True)
    monkeypatch.setattr(reply, "_compiled_head", reply._not_compiled)
    assert sent(headers, [b"ok"], fast=False)[:2] == with_it[:2]
    assert with_it[0].endswith(
        b"x-a: 1\r\nDate: %s\r\nConnection: keep-alive\r\n\r\nok" % DATE.encode()
    )


names = st.sampled_from(
    [
        "X-A",
        "x-a",
        "Content-Type",
        "Content-Length",
        "content-length",
        "CONTENT-LENGTH",
        "Date",
        "Connection",
        "Keep-Alive",
        "Transfer-Encoding",
        "Upgrade",
        "X-\xe9",
        "X-\u2603",
        "X-\r",
        "X-\n",
    ]
)
values = st.sampled_from(
    ["", "0", "1", "3", "5", "27", "007", " 1", "+1", "close", "caf\xe9", "\u2603", "a\r\nb"]
)
values |= st.text(st.characters(max_codepoint=0x17F), max_size=8)
statuses = st.sampled_from(
    [
        "200 OK",
        "204 No Content",
        "304 Not Modified",
        "404 Not Found",
        "500 Internal Server Error",
        "100 Continue",
        "101 Switching Protocols",
        "2x0 OK",
        "200 caf\xe9",
        "200 \u2603",
        "200\r\n",
    ]
)
chunks = st.sampled_from([b"", b"a", b"hello", b"\r\n0\r\n\r\n", b"y" * 12, b"x" * 17])
chunks |= st.binary(max_size=20)


@compiled
@settings(max_examples=1000, deadline=None)
@given(
    headers=st.lists(st.tuples(names, values), max_size=5),
    body=st.lists(chunks, max_size=3),
    status=statuses,
    version=st.sampled_from(["1.1", "1.0"]),
    method=st.sampled_from(["GET", "HEAD"]),
    keep_alive=st.booleans(),
)
def test_any_answer_is_the_python_forms(
    headers: Fields, body: list[bytes], status: str, version: str, method: str, keep_alive: bool
) -> None:
    request = {"status": status, "version": version, "method": method, "keep_alive": keep_alive}
    python, fast = both(headers, body, **request)
    assert fast[:2] == python[:2]  # the same bytes, state and refusals
    # ... and the compiled form sends every answer whose head the compiled head makes.
    head = reply._compiled_head(
        status,
        headers,
        reply._PLAIN_NAMES,
        reply._SEEN,
        DATE,
        version == "1.1",
        keep_alive,
        method == "HEAD",
    )
    assert fast[2] == (head is not None)
