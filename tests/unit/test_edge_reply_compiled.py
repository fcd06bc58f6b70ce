"""The compiled pass over an answer's fields (gw/edge/_replyfields.c) writes the bytes
``Reply._fields`` writes, for any fields; where it declines, the Python form decides (and
refuses) as before; where it is not built, the Python form makes every head.

CI builds it and sets ``GW_REQUIRE_COMPILED=1`` (see test_accesslog_compiled.py).
"""

from __future__ import annotations

import os
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gw.edge import reply
from gw.edge.reply import Reply
from gw.edge.request import Message

compiled = pytest.mark.skipif(
    reply._compiled_fields is reply._not_compiled,
    reason="gw.edge._replyfields is not built here (no C compiler at install)",
)
Fields = list[tuple[str, str]]


@pytest.fixture(autouse=True)
def names_met_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test meets its names in tables of its own (another test may have filled the
    process's: then no name is kept, and the compiled form declines every new one)."""
    monkeypatch.setattr(reply, "_PLAIN_NAMES", {})
    monkeypatch.setattr(reply, "_SEEN", {})


def test_ci_has_the_compiled_form() -> None:
    if os.environ.get("GW_REQUIRE_COMPILED") != "1":
        pytest.skip("only where the build is required (CI)")
    assert reply._compiled_fields is not reply._not_compiled


def python_form(headers: Fields) -> tuple[object, bool]:
    """What ``Reply._fields`` makes of ``headers`` (or the error it raises), and whether the
    answer keeps its connection. It also meets the names, as a first answer would."""
    message = Message()
    message.keep_alive = True
    answer = Reply(None, message, keep_alive=True)  # type: ignore[arg-type]
    answer.start_response("200 OK", headers)
    try:
        return answer._fields(), answer.keep_alive
    except (ValueError, UnicodeEncodeError) as ex:
        return type(ex), answer.keep_alive


def compiled_form(headers: Fields) -> object:
    return reply._compiled_fields(headers, reply._PLAIN_NAMES, reply._SEEN)


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
def test_the_compiled_fields_are_the_python_forms() -> None:
    expected, _ = python_form(FULL)
    made = compiled_form(FULL)
    assert made == expected == (made and made[0], 27, True)
    assert made is not None and b"Keep-Alive" not in made[0] and b"caf\xe9" in made[0]


@compiled
def test_many_fields_grow_past_the_first_buffer() -> None:
    headers = [(f"X-Field-{n}", "v" * 200) for n in range(40)]
    expected, _ = python_form(headers)
    assert compiled_form(headers) == expected


@compiled
@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ([("Connection", "close")], "Connection decides the connection's fate"),
        ([("Content-Length", "2"), ("content-length", "2")], "two lengths are refused"),
        ([("Content-Length", " 2")], "a length that is not plain digits"),
        ([("Content-Length", "1" * 19)], "a length beyond 18 digits"),
        ([("X-A", "a\r\nX-Forged: 1")], "a CR or LF is refused"),
        ([("X-A", "a\rb")], "a bare CR too"),
        ([("Keep-Alive", "a\nb")], "a hop-by-hop field with LF (dropped all the same)"),
        ([("X-A", "snow \u2603")], "beyond Latin-1"),
    ],
)
def test_the_compiled_form_declines_and_the_python_form_decides(headers: Fields, why: str) -> None:
    python_form(headers)  # the names are met
    assert compiled_form(headers) is None, why


@compiled
def test_a_name_not_met_before_is_left_to_the_python_form() -> None:
    name = "X-Never-Seen-Before-In-This-Process"
    assert compiled_form([(name, "1")]) is None
    python_form([(name, "1")])
    assert compiled_form([(name, "1")]) == (f"{name}: 1\r\n".encode(), None, False)


@pytest.mark.parametrize(
    ("headers", "fate"),
    [
        ([("X-A", "a\r\nX-Forged: 1")], ValueError),
        ([("content-length", "2"), ("Content-Length", "2")], ValueError),
        ([("X-A", "snow \u2603")], UnicodeEncodeError),
    ],
)
def test_a_head_the_python_form_refuses_is_never_written(
    headers: Fields, fate: type[Exception]
) -> None:
    message = Message()
    message.keep_alive = True
    ours, theirs = socket.socketpair()
    with ours, theirs:
        answer = Reply(ours, message, keep_alive=True)
        answer.start_response("200 OK", headers)
        with pytest.raises(fate):
            answer.send([b"ok"])
        theirs.setblocking(False)
        with pytest.raises(BlockingIOError):
            theirs.recv(100)  # nothing at all was written


def test_without_the_compiled_form_the_heads_are_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = Message()
    message.keep_alive = True

    def head() -> bytes:
        answer = Reply(None, message, keep_alive=True)  # type: ignore[arg-type]
        answer.start_response("200 OK", [*FULL, ("Connection", "close")])
        return answer._head()

    with_it = head()
    monkeypatch.setattr(reply, "_compiled_fields", reply._not_compiled)
    assert head() == with_it
    assert with_it.endswith(b"X-Latin: caf\xe9\r\nConnection: close\r\n\r\n")


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


@compiled
@settings(max_examples=400, deadline=None)
@given(headers=st.lists(st.tuples(names, values), max_size=6))
def test_any_fields_get_the_python_forms_bytes(headers: Fields) -> None:
    expected, keeps = python_form(headers)  # meets the names first
    made = compiled_form(headers)
    if made is not None:
        assert made == expected and keeps  # it never leaves out a refusal or a close
    ordinary = all(
        name not in ("Connection", "X-\u2603", "X-\r")
        and "\r" not in value
        and "\n" not in value
        and max(map(ord, value), default=0) <= 0xFF
        for name, value in headers
    )
    lengths = [value for name, value in headers if name.lower() == "content-length"]
    plain_length = len(lengths) <= 1 and all(v.isascii() and v.isdigit() for v in lengths)
    assert (made is not None) == (ordinary and plain_length)
