"""The compiled forms of gw.edge.reply (gw/edge/_replyfields.c). The answer head (``head``)
writes the bytes and sets the framing ``Reply._head_made_here`` writes and sets, for any status
and fields; the whole usual answer (``answer``) sends what ``Reply.send``'s Python form sends,
byte for byte, and leaves the reply in the same state (the connection's fate, the body's
framing and bytes sent) or raises the same error, for any status, fields, request and list of
chunks. Where either declines, the Python form decides (and refuses) as before; where it is
not built, the Python form makes every head and sends every answer.

CI builds it and sets ``GW_REQUIRE_COMPILED=1`` (see test_accesslog_compiled.py).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gw.edge import reply
from gw.edge.reply import Reply
from gw.edge.request import Message

compiled = pytest.mark.skipif(
    reply._compiled_head is reply._not_compiled,
    reason="gw.edge._replyfields is not built here (no C compiler at install)",
)
Fields = list[tuple[str, str]]
DATE = "Sun, 06 Dec 2026 18:02:44 GMT"


@pytest.fixture(autouse=True)
def names_met_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test meets its names in tables of its own (another test may have filled the
    process's: then no name is kept, and the compiled form declines every new one); the
    clock does not tick between the two forms."""
    monkeypatch.setattr(reply, "_PLAIN_NAMES", {})
    monkeypatch.setattr(reply, "_SEEN", {})
    monkeypatch.setattr(reply, "_http_date", lambda: DATE)


def test_ci_has_the_compiled_form() -> None:
    if os.environ.get("GW_REQUIRE_COMPILED") != "1":
        pytest.skip("only where the build is required (CI)")
    assert reply._compiled_head is not reply._not_compiled
    assert reply._compiled_answer is not reply._not_compiled
    from gw.edge import _replyfields

    assert reply._compiled_answer is _replyfields.answer


def request(version: str, method: str) -> Message:
    """A parsed request that lets its connection go on."""
    message = Message()
    message.keep_alive = True
    message.version = version
    message.method = method
    return message


def answer_to(
    headers: Fields, status: str = "200 OK", version: str = "1.1", method: str = "GET"
) -> Reply:
    answer = Reply(None, request(version, method), keep_alive=True)  # type: ignore[arg-type]
    answer.start_response(status, headers)
    return answer


def made(answer: Reply, head: bytes) -> tuple[object, ...]:
    return head, answer._length, answer._chunked, answer._bodyless, answer.keep_alive


def python_form(headers: Fields, **request: str) -> tuple[object, ...] | type[Exception]:
    """What ``Reply._head_made_here`` writes for ``headers`` and the framing it sets (or the
    error it raises). It also meets the names, as a first answer would."""
    answer = answer_to(headers, **request)
    try:
        return made(answer, answer._head_made_here())
    except (ValueError, UnicodeEncodeError) as ex:
        return type(ex)


def compiled_form(headers: Fields, **request: str) -> tuple[object, ...] | None:
    answer = answer_to(headers, **request)
    head = reply._compiled_head(
        answer._status,
        answer._headers,
        reply._PLAIN_NAMES,
        reply._SEEN,
        DATE,
        answer.message.version == "1.1",
        answer.keep_alive,
        answer._bodyless,
    )
    return head


# Requests whose answer has no body, whatever it announces.
BODILESS: list[dict[str, Any]] = [
    {"method": "HEAD"},
    {"status": "204 No Content"},
    {"status": "304 Not Modified"},
]


FULL = [
    ("content-length", "27"),
    ("content-type", "text/plain"),
    ("X-RateLimit-Limit", "1000000"),
    ("RateLimit-Policy", '"default";q=1000000;w=1'),
    ("X-Request-Id", "req_9f846aa6cabe10fc4b56"),
    ("Strict-Transport-Security", "max-age=31536000; includeSubDomains"),
    ("Date", "Sun, 06 Dec 2026 18:02:44 GMT"),
    ("Keep-Alive", "timeout=5"),  # hop-by-hop: dropped
    ("X-Latin", "caf\xe9"),
]


@compiled
def test_the_compiled_head_is_the_python_forms() -> None:
    expected = python_form(FULL)
    written = compiled_form(FULL)
    assert written == expected
    assert written is not None and written[1:] == (27, False, False, True)
    head = written[0]
    assert isinstance(head, bytes)
    assert head.startswith(b"HTTP/1.1 200 OK\r\ncontent-length: 27\r\n")
    assert head.endswith(b"X-Latin: caf\xe9\r\nConnection: keep-alive\r\n\r\n")
    assert b"Keep-Alive" not in head and head.count(b"Date:") == 1


@compiled
@pytest.mark.parametrize(
    ("headers", "request_", "ends", "framing"),
    [
        (
            [],
            {},
            b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n",
            (None, True, False, True),
        ),
        ([], {"version": "1.0"}, b"GMT\r\nConnection: close\r\n\r\n", (None, False, False, False)),
        (
            [("Content-Length", "0")],
            {"version": "1.0"},
            b"GMT\r\nConnection: keep-alive\r\n\r\n",
            (0, False, False, True),
        ),
    ],
)
def test_the_framing_is_the_python_forms(
    headers: Fields, request_: dict[str, str], ends: bytes, framing: tuple[object, ...]
) -> None:
    expected = python_form(headers, **request_)
    written = compiled_form(headers, **request_)
    assert written == expected
    assert written is not None and written[1:] == framing
    assert isinstance(written[0], bytes) and written[0].endswith(ends)


@compiled
@pytest.mark.parametrize("request_", [*BODILESS, {"status": "103 Early Hints"}])
def test_an_answer_without_a_body_is_neither_chunked_nor_closed(request_: dict[str, str]) -> None:
    expected = python_form([], **request_)
    written = compiled_form([], **request_)
    assert written == expected
    assert written is not None and written[1:] == (None, False, True, True)
    assert isinstance(written[0], bytes)
    assert written[0].endswith(b"GMT\r\nConnection: keep-alive\r\n\r\n")


@compiled
def test_many_fields_grow_past_the_first_buffer() -> None:
    headers = [(f"X-Field-{n}", "v" * 200) for n in range(40)]
    expected = python_form(headers)
    assert compiled_form(headers) == expected


@compiled
@pytest.mark.parametrize(
    ("headers", "status", "why"),
    [
        ([("Connection", "close")], "200 OK", "Connection decides the connection's fate"),
        ([("Content-Length", "2"), ("content-length", "2")], "200 OK", "two lengths are refused"),
        ([("Content-Length", " 2")], "200 OK", "a length that is not plain digits"),
        ([("Content-Length", "1" * 19)], "200 OK", "a length beyond 18 digits"),
        ([("X-A", "a\r\nX-Forged: 1")], "200 OK", "a CR or LF is refused"),
        ([("X-A", "a\rb")], "200 OK", "a bare CR too"),
        ([("Keep-Alive", "a\nb")], "200 OK", "a hop-by-hop field with LF (dropped all the same)"),
        ([("X-A", "snow \u2603")], "200 OK", "beyond Latin-1"),
        ([], "200 OK\r\nX-Forged: 1", "a CR or LF in the status is refused"),
        ([], "2O0 OK", "a status that is not three digits"),
        ([], " 200 OK", "a status with a space before its digits"),
        ([], "20", "a status too short"),
        ([], "101 Switching Protocols", "a 101's fields are the tunnel's"),
        ([], "200 \u2603", "a status beyond Latin-1"),
    ],
)
def test_the_compiled_form_declines_and_the_python_form_decides(
    headers: Fields, status: str, why: str
) -> None:
    python_form(headers)  # the names are met
    assert compiled_form(headers, status=status) is None, why


@compiled
def test_a_name_not_met_before_is_left_to_the_python_form() -> None:
    name = "X-Never-Seen-Before-In-This-Process"
    assert compiled_form([(name, "1")]) is None
    python_form([(name, "1")])
    written = compiled_form([(name, "1")])
    assert written is not None and f"\r\n{name}: 1\r\n".encode() in written[0]


@pytest.mark.parametrize(
    ("headers", "status", "fate"),
    [
        ([("X-A", "a\r\nX-Forged: 1")], "200 OK", ValueError),
        ([("content-length", "2"), ("Content-Length", "2")], "200 OK", ValueError),
        ([("X-A", "snow \u2603")], "200 OK", UnicodeEncodeError),
        ([], "200 OK\r\nX-Forged: 1", ValueError),
    ],
)
def test_a_head_the_python_form_refuses_is_never_written(
    headers: Fields, status: str, fate: type[Exception]
) -> None:
    message = Message()
    message.keep_alive = True
    ours, theirs = socket.socketpair()
    with ours, theirs:
        answer = Reply(ours, message, keep_alive=True)
        answer.start_response(status, headers)
        with pytest.raises(fate):
            answer.send([b"ok"])
        theirs.setblocking(False)
        with pytest.raises(BlockingIOError):
            theirs.recv(100)  # nothing at all was written


def test_without_the_compiled_form_the_heads_are_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def head() -> tuple[object, ...]:
        answer = answer_to([*FULL, ("X-Second", "2")])
        return made(answer, answer._head())

    head()  # the names are met
    with_it = head()
    monkeypatch.setattr(reply, "_compiled_head", reply._not_compiled)
    assert head() == with_it
    written = with_it[0]
    assert isinstance(written, bytes)
    assert written.endswith(b"X-Second: 2\r\nConnection: keep-alive\r\n\r\n")


names = st.sampled_from(
    [
        "X-A",
        "x-a",
        "Content-Type",
        "Content-Length",
        "content-length",
        "Date",
        "Connection",
        "Keep-Alive",
        "Transfer-Encoding",
        "Upgrade",
        "X-\xe9",
        "X-\u2603",
        "X-\r",
    ]
)
values = st.sampled_from(["", "0", "27", "007", " 1", "+1", "1_0", "close", "caf\xe9", "\u2603"])
values |= st.text(st.characters(max_codepoint=0x17F), max_size=12)
statuses = st.sampled_from(
    [
        "200 OK",
        "204 No Content",
        "304 Not Modified",
        "404 Not Found",
        "100 Continue",
        "101 Switching Protocols",
        "599 x",
        "2x0 OK",
        "200 caf\xe9",
        "200 \u2603",
        "200\r\n",
    ]
)


@compiled
@settings(max_examples=500, deadline=None)
@given(
    headers=st.lists(st.tuples(names, values), max_size=6),
    status=statuses,
    version=st.sampled_from(["1.1", "1.0"]),
    method=st.sampled_from(["GET", "HEAD"]),
)
def test_any_answer_gets_the_python_forms_head(
    headers: Fields, status: str, version: str, method: str
) -> None:
    request = {"status": status, "version": version, "method": method}
    expected = python_form(headers, **request)  # meets the names first
    written = compiled_form(headers, **request)
    if written is not None:
        assert written == expected  # it never leaves out a refusal or a close
    ordinary = all(
        name not in ("Connection", "X-\u2603", "X-\r")
        and "\r" not in value
        and "\n" not in value
        and max(map(ord, value), default=0) <= 0xFF
        for name, value in headers
    )
    lengths = [value for name, value in headers if name.lower() == "content-length"]
    plain_length = len(lengths) <= 1 and all(v.isascii() and v.isdigit() for v in lengths)
    code = status[:3]
    plain_status = (
        code.isascii()
        and code.isdigit()
        and code != "101"
        and max(map(ord, status)) <= 0xFF
        and "\r" not in status
        and "\n" not in status
    )
    assert (written is not None) == (ordinary and plain_length and plain_status)


# -- the whole usual answer (``answer``) ------------------------------------------------------

COMPILED_ANSWER = reply._compiled_answer


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
    wire = Wire(takes)
    answer = Reply(wire, request(version, method), keep_alive=keep_alive)  # type: ignore[arg-type]
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
    "request_", [*BODILESS, {"method": "HEAD", "headers": [("Content-Length", "9")]}]
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


# The head's strategies, and what only an answer's framing reads (lengths, a CRLF in a value).
answer_names = names | st.just("X-\n")
answer_values = values | st.sampled_from(["1", "3", "5", "a\r\nb"])
answer_statuses = statuses | st.just("500 Internal Server Error")
chunks = st.sampled_from([b"", b"a", b"hello", b"\r\n0\r\n\r\n", b"y" * 12, b"x" * 17])
chunks |= st.binary(max_size=20)


@compiled
@settings(max_examples=1000, deadline=None)
@given(
    headers=st.lists(st.tuples(answer_names, answer_values), max_size=5),
    body=st.lists(chunks, max_size=3),
    status=answer_statuses,
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
