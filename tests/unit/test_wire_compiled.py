"""The compiled request head (gw/upstream/_wire.c) is the Python form's, to the byte,
for any request; where it declines, the Python form makes (or refuses) the head; where it is
not built, the Python form makes every head. The compiled collector of an answer's fields
(gw/_collector.h) keeps what ``Response._on_header`` keeps, and the compiled state and callbacks
of an answer (``_wire.ResponseState``) decide what the Python callbacks decide, for any answer;
where they are not built (``_PythonResponseState``), the Python callbacks read every answer.

CI builds it and sets ``GW_REQUIRE_COMPILED=1`` (see test_accesslog_compiled.py).
"""

from __future__ import annotations

import gc
import importlib.util
import os
import socket
import sys
from collections.abc import Mapping
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gw.errors import InvalidHeader
from gw.upstream import wire

compiled = pytest.mark.skipif(
    wire._compiled_head is wire._not_compiled or wire._Collector is None or not wire._COMPILED,
    reason="gw.upstream._wire is not built here (no C compiler at install)",
)


def test_ci_has_the_compiled_form() -> None:
    if os.environ.get("GW_REQUIRE_COMPILED") != "1":
        pytest.skip("only where the build is required (CI)")
    assert wire._compiled_head is not wire._not_compiled
    assert wire._Collector is not None
    assert wire._COMPILED  # the answer's state and callbacks: _wire.ResponseState
    assert wire.Response.on_headers_complete is wire._ResponseState.on_headers_complete


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


# The llhttp callbacks whose Python forms run where the compiled ones are not built.
PYTHON_FORMS = {
    "on_message_begin": "_message_begin",
    "on_headers_complete": "_headers_complete",
    "on_body": "_body",
    "on_message_complete": "_message_complete",
}


def python_forms(patch: pytest.MonkeyPatch) -> None:
    """Make every Response read its answer with the Python forms only (llhttp for every answer,
    no compiled collector, the Python callbacks), as where gw.upstream._wire is not built."""
    patch.setattr(wire, "_Collector", None)
    patch.setattr(wire.Response, "take_usual", wire._PythonResponseState.take_usual)
    for callback, python_form in PYTHON_FORMS.items():
        patch.setattr(wire.Response, callback, getattr(wire.Response, python_form))


def without_the_compiled_module() -> ModuleType:
    """A copy of gw.upstream.wire imported where gw.upstream._wire cannot be: its answers are
    read by ``_PythonResponseState`` and the Python callbacks bound as such."""
    spec = importlib.util.spec_from_file_location("gw_wire_without_c", wire.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "gw.upstream._wire", None)  # import fails: not built
        patch.delattr(sys.modules["gw.upstream"], "_wire", raising=False)
        spec.loader.exec_module(module)
    return module


PURE = without_the_compiled_module()


def read(
    data: bytes,
    head_request: bool,
    python_only: bool,
    upgrade: bool = False,
    module: ModuleType = wire,
) -> object:
    """What a Response makes of ``data``: its status, fields, body, what is left on the
    connection (reusable, bytes after a 101, the flags behind them), or the error."""
    ours, theirs = socket.socketpair()
    with ours, theirs, pytest.MonkeyPatch.context() as patch:
        if python_only:
            python_forms(patch)
        ours.settimeout(2)
        theirs.sendall(data)
        theirs.shutdown(socket.SHUT_WR)
        try:
            response = module.Response(ours, head_request, upgrade)
            body = b"".join(response.body())
        except (module.MalformedResponse, module.BodyBrokenOff, module.UpstreamClosed) as ex:
            return type(ex).__name__, str(ex)
        flags = (response._extra, response._until_close, response._keep_alive, response._switched)
        return response.status, response.headers, body, response.reusable, response.early, flags


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
        "MalformedResponse",
        f"more than {wire.MAX_HEADERS} header fields",
    )


@pytest.mark.parametrize("form", ["compiled", "python", "without the module"])
def test_a_read_answer_leaves_no_cycle(form: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # PERF: the parser and the collector refer back to their Response; a cycle per request
    # left for the garbage collector makes its pauses the p99 latency.
    if form == "python":
        python_forms(monkeypatch)
    module = PURE if form == "without the module" else wire
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
        gc.collect()
        gc.disable()
        try:
            response = module.Response(ours, head_request=False)
            assert b"".join(response.body()) == b"first"
            del response
            assert gc.collect() == 0  # nothing was left in a cycle
        finally:
            gc.enable()


# -- an answer's state and llhttp's callbacks on it -------------------------------------------

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: <a>\r\n\r\n"
_SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
_OK = b"HTTP/1.1 200 OK\r\n"
_CHUNKED = b"Transfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n0\r\n\r\n"

# Each shape of answer that takes the callbacks down another branch: (answer, HEAD, upgrade).
ANSWERS = {
    "continue-then-200": (_CONTINUE + _OK + b"Content-Length: 2\r\n\r\nok", False, False),
    "hints-then-204": (_HINTS + b"HTTP/1.1 204 No Content\r\n\r\n", False, False),
    "six-interims": (_HINTS * 6 + _OK + b"Content-Length: 0\r\n\r\n", False, False),
    "101-asked": (_SWITCH + b"Connection: upgrade\r\n\r\n\x81\x00", False, True),
    "101-asked-no-connection": (_SWITCH + b"\r\n\x81\x00", False, True),
    "101-unasked": (_SWITCH + b"Connection: upgrade\r\n\r\n\x81\x00", False, False),
    "101-unasked-no-connection": (_SWITCH + b"\r\n" + _OK + b"\r\n", False, False),
    "101-http-1.0": (b"HTTP/1.0 101 Switching\r\nConnection: upgrade\r\n\r\n", False, True),
    "200-when-upgrade-asked": (_OK + b"Content-Length: 2\r\n\r\nok", False, True),
    "chunked": (_OK + _CHUNKED, False, False),
    "chunked-head": (_OK + _CHUNKED, True, False),
    "chunked-trailer": (_OK + _CHUNKED[:-2] + b"Set-Cookie: a=1\r\n\r\n", False, False),
    "gzip-chunked": (_OK + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", False, False),
    "identity": (_OK + b"Transfer-Encoding: identity\r\n\r\nfirst", False, False),
    "two-codings": (_OK + b"Transfer-Encoding: chunked\r\n" + _CHUNKED, False, False),
    "chunked-http-1.0": (b"HTTP/1.0 200 OK\r\n" + _CHUNKED, False, False),
    "http-1.0-length": (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", False, False),
    "http-1.0-keep-alive": (
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
        False,
        False,
    ),
    "http-1.0-until-close": (b"HTTP/1.0 200 OK\r\n\r\nfirst", False, False),
    "head": (_OK + b"Content-Length: 500\r\n\r\n", True, False),
    "head-with-body": (_OK + b"Content-Length: 5\r\n\r\nfirst", True, False),
    "head-close": (_OK + b"Connection: close\r\n\r\n", True, False),
    "204": (b"HTTP/1.1 204 No Content\r\n\r\n", False, False),
    "204-then-answer": (b"HTTP/1.1 204 No Content\r\n\r\n" + _OK + b"\r\n", False, False),
    "304": (b"HTTP/1.1 304 Not Modified\r\n\r\n", False, False),
    "304-with-length": (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n", False, False),
    "until-close": (_OK + b"\r\nfirst", False, False),
    "599": (b"HTTP/1.1 599 X\r\nContent-Length: 0\r\n\r\n", False, False),
    "second-answer-after": (_OK + b"Content-Length: 2\r\n\r\nok" + _OK + b"\r\n", False, False),
    "garbage-after": (_OK + b"Content-Length: 2\r\n\r\nokgarbage\r\n\r\n", False, False),
    "body-after-chunked": (_OK + _CHUNKED + b"first", False, False),
    "600": (b"HTTP/1.1 600 X\r\nContent-Length: 0\r\n\r\n", False, False),
    "099": (b"HTTP/1.1 099 X\r\nContent-Length: 0\r\n\r\n", False, False),
    "000": (b"HTTP/1.1 000 X\r\n\r\n", False, False),
    "199": (b"HTTP/1.1 199 X\r\n\r\n" + _OK + b"Content-Length: 0\r\n\r\n", False, False),
}


def every_form_reads(data: bytes, head_request: bool, upgrade: bool) -> None:
    """The compiled state and callbacks, the Python callbacks on that state, and the Python
    callbacks on ``_PythonResponseState`` (gw.upstream._wire not built) read ``data`` alike."""
    expected = read(data, head_request, True, upgrade)
    assert read(data, head_request, False, upgrade) == expected
    assert read(data, head_request, False, upgrade, module=PURE) == expected


@compiled
@pytest.mark.parametrize(("data", "head_request", "upgrade"), ANSWERS.values(), ids=ANSWERS)
def test_the_compiled_callbacks_read_each_shape_of_answer_as_the_python_ones(
    data: bytes, head_request: bool, upgrade: bool
) -> None:
    every_form_reads(data, head_request, upgrade)


_STATUS_LINE = st.sampled_from(
    [
        b"HTTP/1.1 200 OK",
        b"HTTP/1.0 200 OK",
        b"HTTP/1.1 404 Not Found",
        b"HTTP/1.1 204 No Content",
        b"HTTP/1.1 304 Not Modified",
        b"HTTP/1.0 304 Not Modified",
        b"HTTP/1.1 101 Switching Protocols",
        b"HTTP/1.0 101 Switching Protocols",
        b"HTTP/1.1 199 X",
        b"HTTP/1.1 599 X",
        b"HTTP/1.1 600 X",
        b"HTTP/1.1 099 X",
    ]
)
# The field that frames the body, and a body for it (or not: broken off, a coding gw refuses).
_FRAMING = st.sampled_from(
    [
        (b"Content-Length: 5\r\n", b"first"),
        (b"content-length: 0\r\n", b""),
        (b"Transfer-Encoding: chunked\r\n", b"5\r\nfirst\r\n0\r\n\r\n"),
        (b"transfer-encoding: Chunked\r\n", b"5\r\nfirst\r\n0\r\nX-T: 1\r\n\r\n"),
        (b"", b"first"),  # until the close
        (b"", b""),
        (b"Content-Length: 5\r\n", b"fir"),
        (b"Transfer-Encoding: chunked\r\n", b"5\r\nfirst\r\n"),
        (b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"),
        (b"Transfer-Encoding: identity\r\n", b"first"),
    ]
)
_CALLBACK_FIELD = st.sampled_from(
    [
        b"Connection: upgrade",
        b"Connection: close",
        b"Connection: keep-alive",
        b"Upgrade: websocket",
        b"Set-Cookie: a=1",
        b"Content-Length: 5",
        b"Transfer-Encoding: chunked",
    ]
)
_AFTER = st.sampled_from(
    [b"", _OK + b"Content-Length: 0\r\n\r\n", _OK + b"\r\nfirst", b"garbage\r\n\r\n", b"\x81\x00"]
)


@compiled
@settings(max_examples=500)
@given(
    st.lists(st.sampled_from([_CONTINUE, _HINTS]), max_size=2),
    _STATUS_LINE,
    _FRAMING,
    st.lists(_CALLBACK_FIELD, max_size=3),
    _AFTER,
    st.booleans(),
    st.booleans(),
)
def test_the_compiled_callbacks_decide_what_the_python_callbacks_decide(
    interims: list[bytes],
    status: bytes,
    framing: tuple[bytes, bytes],
    fields: list[bytes],
    after: bytes,
    head_request: bool,
    upgrade: bool,
) -> None:
    """Whatever the answer (interim answers, a 101 asked for or not, transfer codings, HTTP/1.0,
    HEAD, 204 and 304, no framing, bytes after it, an invalid status), every form leaves the
    same status, fields, body, error, and verdict on the connection."""
    field, body = framing
    head = status + b"\r\n" + field + b"".join(f + b"\r\n" for f in fields) + b"\r\n"
    every_form_reads(b"".join(interims) + head + body + after, head_request, upgrade)


@compiled
def test_the_compiled_callbacks_decide_a_final_answer_and_hand_on_every_other_head(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The compiled form decides the usual head itself (a form that always declined would pass
    the tests above) and asks the Python form about every other one."""
    asked: list[int] = []
    python_form = wire.Response._headers_complete

    def counted(self: wire.Response) -> None:
        asked.append(self._parser.get_status_code())
        python_form(self)

    monkeypatch.setattr(wire.Response, "_headers_complete", counted)
    read(_OK + b"Content-Length: 2\r\n\r\nok", False, python_only=False)
    read(b"HTTP/1.0 304 Not Modified\r\n\r\n", True, python_only=False)
    assert asked == []
    for data, _, _ in (ANSWERS["continue-then-200"], ANSWERS["chunked"], ANSWERS["600"]):
        read(data, False, python_only=False)
    assert asked == [100, 200, 600]


@pytest.mark.parametrize("form", ["compiled", "without the module"])
def test_an_answer_never_closed_is_still_collected(form: str) -> None:
    """An answer abandoned without ``close()`` (its cycle through the parser left whole) is
    still freed by the garbage collector."""
    module = PURE if form == "without the module" else wire
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(_OK + b"Content-Length: 5\r\n\r\n")  # the body never read
        response = module.Response(ours, head_request=False)
        assert response._parser is not None
        del response
        gc.collect()
        assert not [o for o in gc.get_objects() if type(o) is module.Response]


@compiled
def test_a_state_the_compiled_callbacks_do_not_know_is_the_python_forms() -> None:
    """Attributes deleted or replaced (never by gw): the compiled form hands the head to the
    Python form, never reads a missing one."""

    class Parser:
        def get_status_code(self) -> int:
            return 200

        def should_keep_alive(self) -> bool:
            return True

    class State(wire._ResponseState):
        asked = 0

        def _headers_complete(self) -> None:
            State.asked += 1

    for name in ("headers", "_kept", "_parser"):
        state = State()
        state._parser = Parser()  # type: ignore[assignment]
        delattr(state, name)
        state.on_headers_complete()
    state = State()
    state._parser = Parser()  # type: ignore[assignment]
    state._kept = "a collector of another kind"  # type: ignore[assignment]
    state.on_headers_complete()
    assert State.asked == 4
    state._kept = None
    state.on_headers_complete()  # the usual head: decided here
    assert (State.asked, state.status, state._head_done, state._until_close) == (4, 200, True, True)


# -- the usual answer, read without llhttp ---------------------------------------------------


def took_usual(data: bytes, head_request: bool = False) -> bool:
    """Whether a Response read ``data`` without making llhttp's parser (``take_usual``)."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(data)
        response = wire.Response(ours, head_request)
        taken = not hasattr(response, "_parser")
        response.close()
        return taken


_USUAL = _OK + b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


@compiled
def test_the_usual_answer_is_read_without_llhttp() -> None:
    read(_USUAL, False, python_only=True)  # its names, as on_header remembers them
    assert read(_USUAL, False, python_only=False) == (
        200,
        [("content-type", "application/json"), ("content-length", "2")],
        b"{}",
        True,  # reusable
        b"",
        (False, False, True, False),
    )
    assert took_usual(_USUAL)
    assert took_usual(_OK + b"Content-Length: 0\r\n\r\n")
    assert took_usual(_OK + b"Content-Length: 500\r\n\r\n", head_request=True)
    # and every other answer is llhttp's
    assert not took_usual(_USUAL + b"X")  # a byte after it
    assert not took_usual(_USUAL[:-1])  # its body not whole in the first read
    assert not took_usual(_OK + b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
    assert took_usual(_OK + b"Content-Length: 2\r\nConnection: keep-alive\r\n\r\n{}")
    assert not took_usual(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}")
    assert not took_usual(_OK + b"Content-Length: 2\r\n\r\n{}", head_request=True)
    assert not took_usual(_OK + b"X-Met-First-%d: 1\r\nContent-Length: 0\r\n\r\n" % os.getpid())


# Lines around the usual answer's edges: each status line, field and framing either keeps the
# answer usual or makes it llhttp's (or an error), and the two readings must agree. Each is
# drawn half the time from the usual ones, so that many answers are read both ways.
_USUAL_STATUS = st.sampled_from(
    [b"HTTP/1.1 200 OK", b"HTTP/1.1 200 ", b"HTTP/1.1 404 Not\tFound", b"HTTP/1.1 599 X"]
) | st.sampled_from(
    [
        b"HTTP/1.1 200",
        b"HTTP/1.1 204 No Content",
        b"HTTP/1.1 304 Not Modified",
        b"HTTP/1.1 199 X",
        b"HTTP/1.1 2000 OK",
        b"HTTP/1.1 20 OK",
        b"HTTP/1.0 200 OK",
        b"http/1.1 200 OK",
        b"HTTP/1.1  200 OK",
        b"HTTP/1.1 200 caf\xe9",
        b"HTTP/1.1 200 O\x00K",
    ]
)
_USUAL_FIELD = st.sampled_from(
    [
        b"Content-Type: text/plain",
        b"content-type:text/plain",
        b"Content-Type:  \t text/plain",
        b"Set-Cookie: a=1; Path=/",
        b"Keep-Alive: timeout=5",
        b"X-A: a\tb",
        b"Connection: keep-alive",
        b"connection: Keep-Alive",
    ]
) | st.sampled_from(
    [
        b"Content-Type: text/plain ",
        b"Content-Type: text/plain\t",
        b"Content-Type:",
        b"Content-Type : text/plain",
        b" Content-Type: text/plain",
        b"X-Caf\xe9: 1",
        b"X-A: caf\xe9",
        b"X-A: a\x00b",
        b"X-A: a\x7fb",
        b"X-A: 1\r\n continued",
        b"X-A: 1\n",
        b"X-A: 1\r",
        b"Connection: keep-alive, x",
        b"Connection: keep-alivex",
        b"Connection: close",
        b"Proxy-Connection: close",
        b"Upgrade: h2c",
        b"Transfer-Encoding: chunked",
        b"Transfer-Encoding: identity",
        b"Content-Length: +2",
        b"Content-Length: 2 ",
        b"Content-Length:  2",
        b"Content-Length: 02",
        b"Content-Length: 2, 2",
        b"Content-Length: 1234567890123456",
        b"Content-Length: -1",
        b"Content-Length: 0x2",
        b"Content-Length: 2",
    ]
)
# (the Content-Length field, the bytes after the head)
_USUAL_FRAMING = st.sampled_from(
    [(b"Content-Length: 2", b"{}"), (b"content-length: 2", b"{}"), (b"Content-Length: 0", b"")]
) | st.sampled_from(
    [
        (b"Content-Length: 2", b"{"),
        (b"Content-Length: 2", b"{}}"),
        (b"Content-Length: 0", b"{}" + _OK + b"Content-Length: 0\r\n\r\n"),
        (b"", b"{}"),
        (b"", b""),
    ]
)


@compiled
@settings(max_examples=1500)
@given(
    _USUAL_STATUS,
    st.lists(_USUAL_FIELD, max_size=3),
    _USUAL_FRAMING,
    st.integers(min_value=0, max_value=3),
    st.booleans(),
)
def test_the_usual_answer_is_read_as_llhttp_reads_it(
    status: bytes,
    fields: list[bytes],
    framing: tuple[bytes, bytes],
    at: int,
    head_request: bool,
) -> None:
    """Whatever is changed around the usual answer (status line, a field's name, spacing or
    characters, framing fields, a body short, long or followed by more), reading it without
    llhttp (where taken) leaves what llhttp and the Python callbacks leave: status, fields,
    body, error, and the verdict on the connection."""
    length, body = framing
    lines = list(fields)
    if length:
        lines.insert(min(at, len(lines)), length)
    data = status + b"\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n" + body
    expected = read(data, head_request, python_only=True)  # llhttp; it fills the names table
    assert read(data, head_request, python_only=False) == expected
