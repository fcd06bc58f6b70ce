"""The compiled passes over a request's head (gw/edge/_requestfields.c) keep the fields, parse
the messages and make the environ the Python forms keep, parse and make, for any request;
where they decline, the Python forms decide (and refuse) as before; where they are not built,
the Python forms do it all.

CI builds them and sets ``GW_REQUIRE_COMPILED=1`` (see test_accesslog_compiled.py).
"""

from __future__ import annotations

import gc
import os
import socket
import types
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gw.core.ingress import HEADERS
from gw.edge import connection, environ
from gw.edge.connection import Connection
from gw.edge.environ import build_environ
from gw.edge.request import Limits, Message, RequestRefused

compiled = pytest.mark.skipif(
    connection.Collector is None
    or connection.Callbacks is None
    or environ._compiled_environ is environ._not_compiled,
    reason="gw.edge._requestfields is not built here (no C compiler at install)",
)
Fields = list[tuple[bytes, bytes]]


def test_ci_has_the_compiled_forms() -> None:
    if os.environ.get("GW_REQUIRE_COMPILED") != "1":
        pytest.skip("only where the build is required (CI)")
    assert connection.Collector is not None
    assert connection.Callbacks is not None
    assert environ._compiled_environ is not environ._not_compiled


# -- the environ's fields ------------------------------------------------------------------

_KNOWN = (b"Host", b"host", b"X-Token", b"x-token", b"X_User_Id", b"Content-Type")
_NAMES = st.sampled_from(
    (*_KNOWN, b"content-length", b"Authorization", b"TE", b"x.dotted", b"Caf\xe9")
) | st.from_regex(rb"[A-Za-z0-9_.-]{1,10}", fullmatch=True)
_VALUES = st.sampled_from([b"", b"a", b" v \t", b"\t", b"5", b"caf\xe9 ", b"a,b"]) | st.binary(
    max_size=8
)


_TARGETS = st.sampled_from(
    [
        b"/p?q=1",
        b"/",
        b"/a%2Fb?x=%41",
        b"/caf\xc3\xa9",
        b"/\xe9?\xe9",
        b"/p??q",
        b"/p?",
        b"?q",
        b"",
        b"*",
        b"http://gw.test/a%41?q",
        b"http://gw.test",
        b"https://gw.test:8443/x/y",
        b"1http://h/p",
    ]
) | st.binary(max_size=12)


def environ_of(
    fields: Fields,
    python_only: bool,
    target: bytes = b"/p?q=1",
    method: str = "GET",
    version: str = "1.1",
) -> object:
    """What build_environ makes of a request (the environ, its Headers as their fields), or
    the refusal it raises."""
    message = Message()
    message.url = target
    message.method = method
    message.version = version
    message.headers = list(fields)
    with pytest.MonkeyPatch.context() as patch:
        if python_only:
            patch.setattr(environ, "_compiled_environ", environ._not_compiled)
        try:
            made = build_environ({"REMOTE_ADDR": "127.0.0.1", "wsgi.x": 1}, message)
        except RequestRefused as ex:
            return ("refused", ex.status, ex.message)
    headers = made.pop(HEADERS, None)
    seen = None if headers is None else (headers.items(), headers.by_name)
    return made, list(made), seen


@compiled
@settings(max_examples=400)
@given(
    st.lists(st.tuples(_NAMES, _VALUES), max_size=10),
    _TARGETS,
    st.sampled_from(["GET", "POST", "HEAD"]),
    st.sampled_from(["1.1", "1.0", "1.2"]),
)
def test_the_compiled_environ_is_the_python_forms(
    fields: Fields, target: bytes, method: str, version: str
) -> None:
    request = {"target": target, "method": method, "version": version}
    # The Python form first: it puts the names in the table the compiled form reads them from.
    python_form = environ_of(fields, python_only=True, **request)  # type: ignore[arg-type]
    assert environ_of(fields, python_only=False, **request) == python_form  # type: ignore[arg-type]


def compiled_environ(fields: Fields, target: bytes = b"/", version: str = "1.1") -> object:
    base = {"REMOTE_ADDR": "127.0.0.1"}
    for name, _ in fields:
        environ._environ_names(name)  # the names table, as the Python form fills it
    return environ._compiled_environ(base, fields, environ._NAMES, target, "GET", version)


@compiled
def test_the_compiled_environ_leaves_repeated_fields_to_the_python_form() -> None:
    fields = [(b"Host", b"a"), (b"X-A", b"1 "), (b"x-a", b"2")]
    assert compiled_environ(fields) is None
    made = compiled_environ(fields[:2])
    assert isinstance(made, dict)
    headers = made.pop(HEADERS)
    assert (headers.items(), headers.by_name) == (
        [("Host", "a"), ("X-A", "1")],
        {"host": "a", "x-a": "1"},
    )
    assert made == {
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "a",
        "HTTP_X_A": "1",
        "REQUEST_METHOD": "GET",
        "RAW_URI": "/",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_TYPE": "",
    }
    refused = environ_of([(b"Host", b"a"), (b"host", b"b")], python_only=False)
    assert refused == ("refused", 400, "more than one host field")


@compiled
def test_the_compiled_environ_leaves_a_name_met_first_to_the_python_form(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(environ, "_NAMES", {})  # a worker's table, before its first request
    fields = [(b"Host", b"a"), (b"X-Met-First", b"1")]
    environ._environ_names(b"Host")
    base = {"REMOTE_ADDR": "127.0.0.1"}
    assert environ._compiled_environ(base, fields, environ._NAMES, b"/", "GET", "1.1") is None
    made = environ_of(fields, python_only=False)
    assert isinstance(made, tuple) and made[0]["HTTP_X_MET_FIRST"] == "1"
    again = environ._compiled_environ(base, fields, environ._NAMES, b"/", "GET", "1.1")
    assert isinstance(again, dict) and again["HTTP_X_MET_FIRST"] == "1"


@compiled
def test_the_compiled_environ_leaves_a_version_it_does_not_know_to_the_python_form() -> None:
    assert compiled_environ([], version="1.2") is None
    made = environ_of([], python_only=False, version="1.2")
    assert isinstance(made, tuple) and made[0]["SERVER_PROTOCOL"] == "HTTP/1.2"


# -- the head's fields, as llhttp hands them over -----------------------------------------


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def empty_answer(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Length", "0")])
    return [b""]


def connection_on(sock: socket.socket, limits: Limits) -> Connection:
    return Connection(
        sock,
        ("127.0.0.1", 40000),
        ("127.0.0.1", 8080),
        empty_answer,
        limits,
        {},
        lambda *args: None,
        lambda: True,
        lambda: True,
        lambda: None,
    )


def parsing_connection(sock: socket.socket, limits: Limits, python_only: bool) -> Connection:
    """A connection whose llhttp callbacks are all compiled, or (``python_only``) all Python."""
    with pytest.MonkeyPatch.context() as patch:
        if python_only:
            patch.setattr(connection, "Collector", None)
            patch.setattr(connection, "Callbacks", None)
        conn = connection_on(sock, limits)
    callbacks = {name: vars(conn).get(name) for name in connection._COMPILED_CALLBACKS}
    if python_only:
        assert callbacks == dict.fromkeys(callbacks)
    else:  # else the comparisons below would compare the Python forms with themselves
        assert all(isinstance(c, types.BuiltinMethodType) for c in callbacks.values())
    return conn


def parsed(data: bytes, limits: Limits, sock: socket.socket, python_only: bool) -> object:
    """The messages a connection's parser keeps from ``data``: each one's fields and state,
    then the refusal, if any."""
    conn = parsing_connection(sock, limits, python_only)
    refused: Any = None
    try:
        conn._feed(data)
    except RequestRefused as ex:
        refused = (ex.status, ex.message)
    messages: list[Message] = list(conn._messages)
    return [(m.headers, m.head_done, m.complete) for m in messages], refused


_FIELD_NAMES = st.sampled_from(
    [b"Host", b"X-A", b"Transfer-Encoding", b"transfer-encodinX", b"Content-Length", b"Trailer"]
) | st.from_regex(rb"[A-Za-z-]{1,20}", fullmatch=True)
_FIELD_VALUES = st.sampled_from([b"chunked", b"gzip, chunked", b"0", b"3"]) | st.from_regex(
    rb"[ -~]{0,40}", fullmatch=True
)


def request_bytes(fields: Fields, trailers: Fields, pipelined: bool) -> bytes:
    head = b"".join(b"%s: %s\r\n" % field for field in fields)
    chunked = b"".join(b"%s: %s\r\n" % field for field in trailers)
    data = b"POST /a HTTP/1.1\r\n" + head + b"\r\n"
    if trailers:
        data = b"POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n" + chunked
        data += b"\r\n"
    return data + (b"GET /c HTTP/1.1\r\nHost: c\r\n\r\n" if pipelined else b"")


@compiled
@settings(max_examples=300)
@given(
    st.lists(st.tuples(_FIELD_NAMES, _FIELD_VALUES), max_size=8),
    st.lists(st.tuples(_FIELD_NAMES, _FIELD_VALUES), max_size=3),
    st.booleans(),
    st.integers(min_value=0, max_value=8),
    st.integers(min_value=8, max_value=60),
)
def test_the_compiled_collector_keeps_what_on_header_keeps(
    fields: Fields, trailers: Fields, pipelined: bool, count: int, size: int
) -> None:
    limits = Limits(fields=count, field_size=size)
    data = request_bytes(fields, trailers, pipelined)
    a, b = socket.socketpair()
    with a, b:
        assert parsed(data, limits, a, python_only=False) == parsed(
            data, limits, a, python_only=True
        )


@compiled
def test_the_compiled_collector_leaves_limits_and_trailers_to_on_header(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    sock = pair[0]
    over = b"GET / HTTP/1.1\r\nX-Long: " + b"v" * 40 + b"\r\n\r\n"
    assert parsed(over, Limits(field_size=40), sock, python_only=False)[1] == (
        431,
        "a header field over 40 bytes",
    )
    many = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"
    assert parsed(many, Limits(fields=2), sock, python_only=False)[1] == (
        431,
        "more than 2 header fields",
    )
    coded = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"
    assert parsed(coded, Limits(), sock, python_only=False)[1][0] == 501
    trailer = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nHost: x\r\n\r\n"
    assert parsed(trailer, Limits(), sock, python_only=False)[1] == (
        400,
        "Host is not allowed in trailers",
    )
    dropped = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\r\n\r\n"
    assert parsed(dropped, Limits(), sock, python_only=False) == (
        [([(b"Transfer-Encoding", b"chunked")], True, True)],
        None,
    )


# -- llhttp's other callbacks: the messages a connection parses -------------------------------


def message_state(message: Message) -> tuple[object, ...]:
    """Every attribute of a message (the Python class's slots; the compiled one has them all)."""
    return tuple(getattr(message, name) for name in Message.__slots__)


def connection_state(conn: Connection) -> tuple[object, ...]:
    """What the callbacks leave on a connection: its messages, the one being parsed, where
    the collector's fields go, and whether what follows is parsed."""
    fields = conn._kept.fields
    kept = "none" if fields is None else "parsing" if fields is conn._parsing.headers else fields
    messages = [message_state(m) for m in conn._messages]
    parsing = message_state(conn._parsing)
    return messages, parsing, kept, conn._last_request, conn._upgraded, conn._rest


def parsed_stream(
    pieces: list[bytes], limits: Limits, sock: socket.socket, python_only: bool
) -> object:
    """What a connection makes of ``pieces``, each fed to llhttp as one read, as ``_fill``
    does; then the refusal, if any."""
    conn = parsing_connection(sock, limits, python_only)
    refused: Any = None
    try:
        for piece in pieces:
            if conn._last_request or conn._upgraded:
                break  # never parsed: see _fill and _next_head
            conn._feed(piece)
    except RequestRefused as ex:
        refused = (ex.status, ex.message)
    return connection_state(conn), refused


_METHODS = st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"OPTIONS", b"CONNECT"])
_VERSIONS = st.sampled_from([b"1.1", b"1.1", b"1.1", b"1.0", b"1.0", b"1.2", b"0.9", b"2.0"])
_PATHS = st.from_regex(rb"/[a-z0-9/]{0,60}(\?[a-z=&]{0,8})?", fullmatch=True)
_FIELDS = st.sampled_from(
    [
        (b"Host", b"gw.test"),
        (b"X-A", b"1"),
        (b"Connection", b"close"),
        (b"Connection", b"keep-alive"),
        (b"Expect", b"100-continue"),
    ]
)
_UNUSUAL_FIELDS = st.sampled_from(
    [
        (b"Connection", b"Upgrade"),
        (b"Upgrade", b"websocket"),
        (b"Transfer-Encoding", b"chunked"),
        (b"X-Seventeen-Chars", b"1"),  # a name of Transfer-Encoding's length
        (b"Content-Length", b"0"),
    ]
)
_TRAILERS = st.sampled_from([(b"X-T", b"1"), (b"Expires", b"0"), (b"Host", b"h")])


def chunked(chunks: list[bytes], trailers: Fields) -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks)
    return body + b"0\r\n" + b"".join(b"%s: %s\r\n" % field for field in trailers) + b"\r\n"


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """One request: any method, version and target length, fields that change how it is
    framed or kept, and a body of its length, chunked (with trailers) or none."""
    method = draw(_METHODS)
    target = b"gw.test:443" if method == b"CONNECT" else draw(_PATHS)
    fields = draw(st.lists(_FIELDS, max_size=3)) + draw(st.lists(_UNUSUAL_FIELDS, max_size=1))
    body = b""
    framing = draw(st.sampled_from(["none", "length", "chunked"]))
    if framing == "length":
        body = draw(st.binary(max_size=8))
        fields.append((b"Content-Length", b"%d" % len(body)))
    elif framing == "chunked":
        chunks = draw(st.lists(st.binary(min_size=1, max_size=6), max_size=3))
        body = chunked(chunks, draw(st.lists(_TRAILERS, max_size=2)))
        fields.append((b"Transfer-Encoding", b"chunked"))
    line = b"%s %s HTTP/%s\r\n" % (method, target, draw(_VERSIONS))
    return line + b"".join(b"%s: %s\r\n" % field for field in fields) + b"\r\n" + body


@st.composite
def streams(draw: st.DrawFn) -> list[bytes]:
    """One to three pipelined requests, cut into reads anywhere (inside a target too)."""
    data = b"".join(draw(st.lists(requests(), min_size=1, max_size=3)))
    cuts = sorted(draw(st.lists(st.integers(min_value=0, max_value=len(data)), max_size=4)))
    return [data[start:end] for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def request_line_limit(data: bytes, anchor: str, room: int) -> int:
    """A request line limit ``room`` bytes from the first request's target or from its line
    as on_headers_complete counts it (method, target, " HTTP/1.1" and the CR)."""
    method, target = data.split(b" ", 2)[:2]
    size = len(target) if anchor == "target" else len(method) + len(target) + 10
    return max(1, size + room)


@compiled
@settings(max_examples=600)
@given(
    streams(),
    st.sampled_from(["target", "line"]),
    st.integers(min_value=-3, max_value=3) | st.integers(min_value=4, max_value=99),
)
def test_the_compiled_callbacks_parse_what_the_python_callbacks_parse(
    pieces: list[bytes], anchor: str, room: int
) -> None:
    """Whatever requests come, in whatever reads, a connection with the compiled callbacks
    parses the same messages (method, target, version, keep-alive, upgrade, fields, body),
    leaves the same state and refuses with the same status and message as one with the
    Python callbacks, whatever the request line's limit (around the first request's)."""
    limits = Limits(request_line=request_line_limit(b"".join(pieces), anchor, room))
    a, b = socket.socketpair()
    with a, b:
        compiled_form = parsed_stream(pieces, limits, a, python_only=False)
        assert compiled_form == parsed_stream(pieces, limits, a, python_only=True)


@compiled
@pytest.mark.parametrize(
    ("data", "refusal"),
    [
        (b"GET /" + b"a" * 30 + b" HTTP/1.1\r\n\r\n", (414, "request line over 30 bytes")),
        (b"GET /" + b"a" * 17 + b" HTTP/1.1\r\n\r\n", (414, "request line over 30 bytes")),
        (b"GET / HTTP/2.0\r\n\r\n", (505, "HTTP/2.0 is not supported: gw speaks HTTP/1.1")),
        (b"GET / HTTP/0.9\r\n\r\n", (400, "HTTP/0.9 requests are not served")),
        (
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            (400, "Transfer-Encoding is not allowed in an HTTP/1.0 request"),
        ),
        (
            b"GET / HTTP/1.1\r\nUpgrade: ws\r\nConnection: upgrade\r\nContent-Length: 1\r\n\r\nx",
            (400, "a request that asks for a protocol upgrade must have no body"),
        ),
    ],
)
def test_the_compiled_callbacks_leave_refusals_to_the_python_forms(
    data: bytes, refusal: tuple[int, str], pair: tuple[socket.socket, socket.socket]
) -> None:
    limits = Limits(request_line=30)
    assert parsed_stream([data], limits, pair[0], python_only=False)[1] == refusal


@compiled
def test_the_compiled_callbacks_make_the_usual_message_and_leave_the_rest(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    compiled_message = pytest.importorskip("gw.edge._requestfields").Message
    data = (
        b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /b HTTP/1.2\r\n\r\n"
        b"GET /c HTTP/1.0\r\nUpgrade: ws\r\nConnection: upgrade\r\n\r\n"
    )
    conn = parsing_connection(pair[0], Limits(), python_only=False)
    conn._feed(data)
    usual, later, upgrade = conn._messages
    assert type(usual) is compiled_message and usual.head_done and usual.keep_alive
    assert (later.version, later.keep_alive, later.complete) == ("1.1", True, True)
    assert (upgrade.version, upgrade.upgrade, conn._upgraded) == ("1.0", True, True)


@compiled
def test_the_compiled_message_starts_as_the_python_one() -> None:
    made = pytest.importorskip("gw.edge._requestfields").Message()
    assert message_state(made) == message_state(Message())
    assert type(made.chunks) is type(Message().chunks)
    with pytest.raises(AttributeError):
        made.other = 1
    del made.url
    with pytest.raises(AttributeError):
        made.url  # noqa: B018


@pytest.mark.parametrize("python_only", [False, True])
def test_a_finished_connection_leaves_no_cycle(
    pair: tuple[socket.socket, socket.socket], python_only: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PERF: the parser and the collector refer back to their connection; a cycle per
    # connection left for the garbage collector makes its pauses the p99 latency.
    if python_only:
        monkeypatch.setattr(connection, "Collector", None)
        monkeypatch.setattr(connection, "Callbacks", None)
    client, served = pair
    conn = connection_on(served, Limits())
    client.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    gc.disable()
    try:
        conn.serve()
        gone = weakref.ref(conn)
        del conn
        assert gone() is None
    finally:
        gc.enable()
    assert client.recv(100).startswith(b"HTTP/1.1 200 OK\r\n")


# -- the usual request, read without llhttp -------------------------------------------------

_USUAL = b"GET /a?b=1 HTTP/1.1\r\nHost: gw.test\r\nAccept: */*\r\n\r\n"


@compiled
def test_the_usual_request_is_read_without_llhttp(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    conn = parsing_connection(pair[0], Limits(), python_only=False)
    fed: list[bytes] = []
    real = conn._parser

    class Counting:
        """llhttp, counting what it is fed."""

        def feed_data(self, data: bytes) -> None:
            fed.append(data)
            real.feed_data(data)

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    conn._parser = Counting()  # type: ignore[assignment]
    conn._feed(_USUAL)  # the first request of a connection: llhttp's (it is at its start)
    conn._feed(_USUAL)
    conn._feed(b"HEAD / HTTP/1.1\r\nHost: gw.test\r\n\r\n")
    conn._feed(b"GET / HTTP/1.1\r\nConnection: Keep-Alive\r\n\r\n")  # as browsers send
    assert fed == [_USUAL]
    usual = conn._messages[1]
    assert (usual.method, usual.url, usual.version, usual.headers) == (
        "GET",
        b"/a?b=1",
        "1.1",
        [(b"Host", b"gw.test"), (b"Accept", b"*/*")],
    )
    assert (usual.keep_alive, usual.upgrade, usual.head_done, usual.complete) == (
        True,
        False,
        True,
        True,
    )
    for other in (
        _USUAL + _USUAL,  # two requests in one read
        _USUAL[:-1],  # a head not whole
        b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx",
        b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: ws\r\n\r\n",
        b"GET /a HTTP/1.0\r\nHost: a\r\n\r\n",
    ):
        fed.clear()
        conn._feed(other)
        assert fed == [other]
        if not conn._parsing.complete:
            break  # llhttp is inside a request: nothing after is taken


# Requests around the usual one's edges, each part drawn half the time from the usual ones.
_USUAL_LINE = st.sampled_from(
    [
        b"GET /a HTTP/1.1",
        b"HEAD /a/b?c=d&e HTTP/1.1",
        b"DELETE /%41 HTTP/1.1",
        b"OPTIONS / HTTP/1.1",
    ]
) | st.sampled_from(
    [
        b"POST /a HTTP/1.1",
        b"GET /a HTTP/1.0",
        b"GET /a HTTP/1.2",
        b"get /a HTTP/1.1",
        b"GET  /a HTTP/1.1",
        b"GET /a  HTTP/1.1",
        b"GET * HTTP/1.1",
        b"OPTIONS * HTTP/1.1",
        b"GET http://gw.test/a HTTP/1.1",
        b"GET /a#f HTTP/1.1",
        b"GET /a b HTTP/1.1",
        b"GET /\xe9 HTTP/1.1",
        b'GET /a"<>\\^`{|} HTTP/1.1',
        b"GET /a HTTP/1.1 ",
        b"CONNECT gw.test:443 HTTP/1.1",
        b"GET /" + b"a" * 70 + b" HTTP/1.1",
    ]
)
_USUAL_FIELD = st.sampled_from(
    [
        b"Host: gw.test",
        b"Accept:*/*",
        b"X-A:  \t v",
        b"Expect: 100-continue",
        b"Cookie: a=1; b=2",
        b"Connection: keep-alive",
        b"connection: Keep-Alive",
    ]
) | st.sampled_from(
    [
        b"X-A: v ",
        b"X-A: v\t",
        b"X-A:",
        b"X-A : v",
        b" X-A: v",
        b"X-\xe9: v",
        b"X-A: caf\xe9",
        b"X-A: a\x00b",
        b"X-A: 1\r\n continued",
        b"X-A: 1\n",
        b"Connection: keep-alive, Upgrade",
        b"Connection: keep-alivex",
        b"connection: close",
        b"Proxy-Connection: close",
        b"Upgrade: websocket",
        b"Content-Length: 0",
        b"content-length: 1",
        b"Transfer-Encoding: chunked",
        b"X-Long: " + b"v" * 60,
    ]
)
_AFTER_HEAD = st.sampled_from([b"", b"", b"", b"x", b"\r\n", _USUAL])


@st.composite
def usual_requests(draw: st.DrawFn) -> bytes:
    fields = draw(st.lists(_USUAL_FIELD, max_size=4))
    head = draw(_USUAL_LINE) + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n"
    return head + draw(_AFTER_HEAD)


@compiled
@settings(max_examples=1500)
@given(
    st.lists(usual_requests(), min_size=1, max_size=3),
    st.integers(min_value=0, max_value=5),
    st.integers(min_value=12, max_value=70),
    st.integers(min_value=14, max_value=90),
)
def test_the_usual_request_is_read_as_llhttp_reads_it(
    reads: list[bytes], fields: int, field_size: int, request_line: int
) -> None:
    """Whatever each read holds (the usual request, or one changed anywhere: method, target,
    version, a field's name, spacing or characters, a field llhttp reads, the limits, bytes
    after the head), a connection that takes the usual request without llhttp leaves the
    same messages, state and refusal as one whose Python callbacks see every request."""
    limits = Limits(fields=fields, field_size=field_size, request_line=request_line)
    # the first request of a connection is llhttp's (within any of these limits)
    pieces = [b"GET / HTTP/1.1\r\n\r\n", *reads]
    a, b = socket.socketpair()
    with a, b:
        expected = parsed_stream(pieces, limits, a, python_only=True)
        assert parsed_stream(pieces, limits, a, python_only=False) == expected
