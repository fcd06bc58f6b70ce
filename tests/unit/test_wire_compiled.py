"""The compiled request head (gw/upstream/_wire.c) is the Python form's, to the byte,
for any request; where it declines, the Python form makes (or refuses) the head; where it is
not built, the Python form makes every head. The compiled collector of an answer's fields
(gw/_collector.h) keeps what ``Response._on_header`` keeps, for any answer.

CI builds it and sets ``GW_REQUIRE_COMPILED=1`` (see test_accesslog_compiled.py).
"""

from __future__ import annotations

import gc
import os
import socket
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gw.errors import InvalidHeader
from gw.upstream import wire

compiled = pytest.mark.skipif(
    wire._compiled_head is wire._not_compiled or wire._Collector is None,
    reason="gw.upstream._wire is not built here (no C compiler at install)",
)


def test_ci_has_the_compiled_form() -> None:
    if os.environ.get("GW_REQUIRE_COMPILED") != "1":
        pytest.skip("only where the build is required (CI)")
    assert wire._compiled_head is not wire._not_compiled
    assert wire._Collector is not None


def latin1(*texts: str) -> bool:
    return all(max(map(ord, text), default=0) < 256 for text in texts)


_METHODS = st.sampled_from(["GET", "POST", "PUT", "PATCH", "post", "HEAD", "G T", "", "GÉT"])
_TEXT = st.text(alphabet="aZ09-_.:/?%=~ \t\r\n\x00\x7f\x80é☃", max_size=8)
_NAME = st.sampled_from(["Host", "HOST", "Content-Length", "accept-encoding", "X-A", "x-a"]) | _TEXT


@compiled
@settings(max_examples=500)
@given(
    method=_METHODS,
    target=st.sampled_from(["/", "/a?b=%2f", "*"]) | _TEXT,
    headers=st.dictionaries(_NAME, st.sampled_from(["1", "gzip", "caf\xe9"]) | _TEXT, max_size=5),
    host=st.sampled_from(["up:8080", "h\xe9", "☃"]),
    chunked=st.booleans(),
    no_body=st.booleans(),
)
def test_the_compiled_head_is_the_python_forms(
    method: str, target: str, headers: dict[str, str], host: str, chunked: bool, no_body: bool
) -> None:
    args = (method, target, headers, host, chunked, no_body)
    try:
        expected: object = wire._request_head(*args)
    except (InvalidHeader, UnicodeEncodeError) as ex:
        expected = type(ex)
    made = wire._compiled_head(*args)
    if made is None:
        # declined: only what the Python form refuses, or a character beyond Latin-1
        assert not isinstance(expected, bytes) or not latin1(method, target, host, *headers)
    else:
        assert made == expected


@compiled
@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Content-Length": "3"},
        {"content-length": "0", "HOST": "h"},
        {"Accept-Encoding": "gzip", "X-A": "caf\xe9"},
        {"Host": "h", "Content-Length": "3", "accept-encoding": "br"},
    ],
)
@pytest.mark.parametrize(("chunked", "no_body"), [(False, True), (False, False), (True, False)])
def test_the_compiled_head_adds_what_the_python_form_adds(
    method: str, headers: dict[str, str], chunked: bool, no_body: bool
) -> None:
    args = (method, "/a?b=%2f", headers, "up:8080", chunked, no_body)
    assert wire._compiled_head(*args) == wire._request_head(*args)


@compiled
def test_the_compiled_head_leaves_other_mappings_to_the_python_form() -> None:
    class Fields(Mapping[str, str]):
        def __init__(self, fields: dict[str, str]) -> None:
            self._fields = fields

        def __getitem__(self, name: str) -> str:
            return self._fields[name]

        def __iter__(self):  # type: ignore[no-untyped-def]
            return iter(self._fields)

        def __len__(self) -> int:
            return len(self._fields)

    fields = Fields({"X-A": "1"})
    assert wire._compiled_head("GET", "/", fields, "up", False, True) is None
    assert wire.request_head("GET", "/", fields, "up", False, True) == (
        b"GET / HTTP/1.1\r\nX-A: 1\r\nHost: up\r\nAccept-Encoding: identity\r\n\r\n"
    )


def test_without_the_compiled_form_the_python_form_makes_every_head(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(wire, "_compiled_head", wire._not_compiled)
    assert wire.request_head("POST", "/", {}, "up", False, True) == (
        b"POST / HTTP/1.1\r\nHost: up\r\nContent-Length: 0\r\nAccept-Encoding: identity\r\n\r\n"
    )
    with pytest.raises(InvalidHeader):
        wire.request_head("GET", "/", {"X-A": "1\r\n"}, "up", False, True)


# -- an answer's fields, as llhttp hands them over ------------------------------------------


def read(data: bytes, head_request: bool, python_only: bool) -> object:
    """What a Response makes of ``data`` (status, fields, body, reusable), or the error."""
    ours, theirs = socket.socketpair()
    with ours, theirs, pytest.MonkeyPatch.context() as patch:
        if python_only:
            patch.setattr(wire, "_Collector", None)
        ours.settimeout(2)
        theirs.sendall(data)
        theirs.shutdown(socket.SHUT_WR)
        try:
            response = wire.Response(ours, head_request)
            body = b"".join(response.body())
        except (wire.MalformedResponse, wire.BodyBrokenOff, wire.UpstreamClosed) as ex:
            return type(ex), str(ex)
        return response.status, response.headers, body, response.reusable


_KNOWN = (b"Content-Length: 5", b"content-length: 5", b"Transfer-Encoding: chunked", b"Date: x")
_FIELD = st.sampled_from(
    (
        *_KNOWN,
        b"X-\xe9: caf\xe9",
        b"Set-Cookie: a=1",
        b"Connection: close",
        b"X-Long: " + b"v" * 300,
    )
) | st.from_regex(rb"[A-Za-z-]{1,12}: [ -~]{0,12}", fullmatch=True)
_BODY = st.sampled_from(
    [b"first", b"5\r\nfirst\r\n0\r\n\r\n", b"5\r\nfirst\r\n0\r\nX-T: 1\r\n\r\n"]
)


@compiled
@settings(max_examples=300)
@given(
    st.sampled_from(
        [b"HTTP/1.1 200 OK", b"HTTP/1.1 103 Early Hints\r\nLink: <a>\r\n\r\nHTTP/1.1 200 OK"]
    )
    | st.sampled_from([b"HTTP/1.0 204 No Content", b"HTTP/1.1 304 Not Modified"]),
    st.lists(_FIELD, max_size=8),
    _BODY,
    st.booleans(),
)
def test_the_compiled_collector_keeps_what_on_header_keeps(
    status: bytes, fields: list[bytes], body: bytes, head_request: bool
) -> None:
    data = status + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n" + body
    assert read(data, head_request, python_only=False) == read(data, head_request, True)


@compiled
def test_the_compiled_collector_leaves_new_names_and_the_count_limit_to_on_header() -> None:
    name = b"X-Never-Met-%d" % os.getpid()
    data = b"HTTP/1.1 200 OK\r\n%s: 1\r\nContent-Length: 0\r\n\r\n" % name
    assert name not in wire._NAMES
    assert read(data, False, python_only=False)[1] == [  # type: ignore[index]
        (name.decode().lower(), "1"),
        ("content-length", "0"),
    ]
    many = b"HTTP/1.1 200 OK\r\n" + b"X-A: 1\r\n" * (wire.MAX_HEADERS + 1) + b"\r\n"
    assert read(many, False, python_only=False) == (
        wire.MalformedResponse,
        f"more than {wire.MAX_HEADERS} header fields",
    )


@pytest.mark.parametrize("python_only", [False, True])
def test_a_read_answer_leaves_no_cycle(python_only: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # PERF: the parser and the collector refer back to their Response; a cycle per request
    # left for the garbage collector makes its pauses the p99 latency.
    if python_only:
        monkeypatch.setattr(wire, "_Collector", None)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
        gc.collect()
        gc.disable()
        try:
            response = wire.Response(ours, head_request=False)
            assert b"".join(response.body()) == b"first"
            del response
            assert gc.collect() == 0  # nothing was left in a cycle
        finally:
            gc.enable()
