"""The head of an answer the edge writes (gw.edge.reply): framing fields and their checks."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from gw.core.headers import NAME_CACHE_SIZE
from gw.edge import reply
from gw.edge.reply import Reply
from gw.edge.request import Message


def _answer(headers: list[tuple[str, str]], body: bytes = b"ok", version: str = "1.1") -> bytes:
    """What the client reads when the app answers 200 with ``headers`` and ``body``."""
    message = Message()
    message.version, message.keep_alive = version, True
    ours, theirs = socket.socketpair()
    with ours, theirs:
        reply = Reply(ours, message, keep_alive=True)
        reply.start_response("200 OK", headers)
        reply.send([body])
        ours.close()
        return theirs.recv(65536)


def _fields(answer: bytes) -> list[str]:
    return answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]


def test_the_apps_fields_pass_in_order_with_a_date_and_the_connections_fate() -> None:
    answer = _answer([("content-type", "text/plain"), ("content-length", "2"), ("x-a", "1")])

    fields = _fields(answer)
    assert fields[:3] == ["content-type: text/plain", "content-length: 2", "x-a: 1"]
    assert fields[3].startswith("Date: ") and fields[4] == "Connection: keep-alive"
    assert answer.endswith(b"\r\n\r\nok")


def test_hop_by_hop_fields_are_the_edges_own_and_an_apps_close_is_kept() -> None:
    answer = _answer(
        [("Connection", "close"), ("Transfer-Encoding", "gzip"), ("Keep-Alive", "5"), ("X", "y")]
    )

    fields = _fields(answer)
    assert fields[0] == "X: y"
    assert "Transfer-Encoding: chunked" in fields and fields[-1] == "Connection: close"
    assert not any(f.lower().startswith(("keep-alive", "transfer-encoding: gzip")) for f in fields)
    assert answer.endswith(b"2\r\nok\r\n0\r\n\r\n")


def test_an_answer_without_a_length_is_chunked_for_11_and_ends_the_connection_for_10() -> None:
    assert b"\r\nTransfer-Encoding: chunked\r\n" in _answer([])
    old = _answer([], version="1.0")
    assert b"chunked" not in old and b"\r\nConnection: close\r\n" in old


def test_an_apps_date_is_not_doubled() -> None:
    fields = _fields(_answer([("Date", "Sun, 06 Dec 2026 00:00:00 GMT"), ("Content-Length", "2")]))
    assert [f for f in fields if f.lower().startswith("date:")] == [
        "Date: Sun, 06 Dec 2026 00:00:00 GMT"
    ]


# Each case twice: with the names in lower case, as Falcon gives them, and as another app may
# spell them.
_SPELLINGS = pytest.mark.parametrize("spell", [str.lower, str.title], ids=["lower", "other"])


@_SPELLINGS
@pytest.mark.parametrize(
    "field",
    [
        ("X-A", "1\r\nSet-Cookie: forged=1"),
        ("X-A", "1\nSet-Cookie: forged=1"),
        ("X-A", "1\rSet-Cookie: forged=1"),
        ("X-A\r\nSet-Cookie", "forged=1"),
        ("X-A\n", "1"),
    ],
)
def test_a_cr_or_lf_in_an_apps_field_is_never_written(
    field: tuple[str, str], spell: Callable[[str], str]
) -> None:
    # APPSEC: a CR or LF would forge fields or a second response (response splitting).
    with pytest.raises(ValueError, match="CR or LF"):
        _answer([(spell(field[0]), field[1]), (spell("Content-Length"), "2")])


@_SPELLINGS
def test_two_lengths_are_refused(spell: Callable[[str], str]) -> None:
    # APPSEC: the client would frame the body by one of them, and a proxy after it by the other.
    with pytest.raises(ValueError, match="more than one Content-Length"):
        _answer([(spell("Content-Length"), "2"), ("content-length", "2")])


def test_the_names_met_are_bounded_and_a_new_spelling_is_still_read() -> None:
    """The kinds of the names met are kept per spelling, at most NAME_CACHE_SIZE of them: past
    the bound, a spelling never met is still read for what it frames."""
    for start in range(0, NAME_CACHE_SIZE + 50, 100):
        _answer([(f"x-n{i}", "1") for i in range(start, start + 100)] + [("content-length", "2")])
    assert len(reply._SEEN) <= NAME_CACHE_SIZE
    assert len(reply._PLAIN_NAMES) <= NAME_CACHE_SIZE
    answer = _answer([("CoNtEnT-LeNgTh", "2"), ("CONNECTION", "close"), ("dAtE", "x")])
    assert _fields(answer) == ["CoNtEnT-LeNgTh: 2", "dAtE: x", "Connection: close"]
