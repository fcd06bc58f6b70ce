"""HTTP/1.1 messages on an upstream connection: the request head built in one buffer, the
response read with llhttp (the parser Node.js uses, through ``httptools``), or, for the usual
answer whole in its first read, by the compiled ``take_usual``, which reads only what llhttp
would read alike and leaves llhttp everything else.

PERF: ``http.client``'s message layer (a ``putheader`` call per header, responses parsed by the
``email`` package) cost about 150 µs of CPU per proxied request on the bench box, more than the
rest of the gateway. Here the head is one ``send`` and the response parsing is C. urllib3
still makes the connections (connect timeouts, socket options, TLS); see ``gw.upstream.pool``.
"""

from __future__ import annotations

import re
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, TYPE_CHECKING, Any, Self

import httptools

from gw.core.bounded import remember
from gw.core.headers import chunked_only, field_name
from gw.errors import InvalidHeader
from gw.host.process import receive, send_all

CHUNK = 64 * 1024
MAX_HEAD_BYTES = 64 * 1024  # what http.client allows for one header line
MAX_HEADERS = 100  # http.client's limit too
MAX_INTERIM = 5  # 1xx answers before the final one; Go's net/http transport allows 5 too
Body = IO[bytes] | Iterable[bytes] | bytes | None

# RFC 9110 token characters for header names; values must not break the message framing.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKENS = re.compile(
    r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?:\n[!#$%&'*+\-.^_`|~0-9A-Za-z]+)*"
)  # one a line
_BAD_TARGET = re.compile(r"[\x00-\x20\x7f]")
_EXPECTS_BODY = frozenset({"POST", "PUT", "PATCH"})


class UpstreamClosed(ConnectionError):
    """The upstream closed the connection before sending a byte of its answer."""


class MalformedResponse(Exception):
    """The upstream's bytes are not a valid HTTP/1.x response (or exceed the head limits)."""


class BodyBrokenOff(Exception):
    """The connection ended before the response body announced by its framing was complete."""


def request_head(
    method: str, target: str, headers: Mapping[str, str], host: str, chunked: bool, no_body: bool
) -> bytes:
    """Return the request line and headers, ready to send (see ``_request_head``)."""
    return _compiled_head(method, target, headers, host, chunked, no_body) or _request_head(
        method, target, headers, host, chunked, no_body
    )


def _request_head(
    method: str, target: str, headers: Mapping[str, str], host: str, chunked: bool, no_body: bool
) -> bytes:
    """Return the request line and headers, ready to send.

    ``Host`` is ``host`` unless given; ``Transfer-Encoding: chunked`` is added for chunked
    bodies, ``Content-Length: 0`` for a POST, PUT or PATCH without a body, and
    ``Accept-Encoding: identity`` when the client named no encoding (so an upstream never
    compresses for a client that did not ask; gw compresses itself where configured).

    Raises:
        InvalidHeader: a name is not a token, or a value or the target would break the framing.
    """
    # APPSEC: client header values arrive already split by the front parser, but identity and
    # transformation headers are built by gw; every one is checked here, where a CR, LF or NUL
    # would let a value forge extra headers or a second request on the kept-alive connection.
    # PERF: all values in one scan, and the names as one string checked once per process.
    if _BAD_TARGET.search(target) or not _TOKEN.fullmatch(method):
        raise InvalidHeader(f"refusing to send the request target {target!r} upstream")
    has_host = has_length = has_encoding = False
    if headers:
        names = "\n".join(headers)
        if names.count("\n") != len(headers) - 1 or _breaks_framing("".join(headers.values())):
            # a name holding the newline itself, or a value that would end its line early
            raise InvalidHeader(f"refusing to send the header {_first_bad(headers)!r} upstream")
        # With one name a line, the string names the list of names: its verdict is theirs.
        has_host, has_length, has_encoding = _NAME_LISTS.get(names) or _name_list(names, headers)
    lines = [f"{method} {target} HTTP/1.1", *map(": ".join, headers.items())]
    if not has_host:
        lines.append(f"Host: {host}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    elif no_body and method in _EXPECTS_BODY and not has_length:
        lines.append("Content-Length: 0")
    if not has_encoding:
        lines.append("Accept-Encoding: identity")
    lines.append("\r\n")  # joined: the last line's CRLF, then the empty line
    return "\r\n".join(lines).encode("latin-1")


def _not_compiled(
    method: Any, target: Any, headers: Any, host: Any, chunked: Any, no_body: Any
) -> None:
    """Stands for the compiled form where it is not built: ``_request_head`` makes every head."""
    return None


# PERF: the head made in C (gw/upstream/_wire.c): the same bytes as ``_request_head``,
# which runs wherever that one declines (anything it would refuse, a character beyond
# Latin-1, a mapping that is not a dict) or where gw was installed without a C compiler.
_compiled_head: Callable[[str, str, Mapping[str, str], str, bool, bool], bytes | None]
_Collector: type[_wire.Collector] | None
try:
    from gw.upstream import _wire
except ImportError:  # built without a C compiler (setup.py: optional)
    _compiled_head = _not_compiled
    _Collector = None
    _COMPILED = False
else:
    _compiled_head = _wire.request_head
    _Collector = _wire.Collector
    _COMPILED = True
_NO_SIZE = sys.maxsize  # an answer's fields are bounded by MAX_HEAD_BYTES as they are read


# PERF: the lists of header names already checked (joined one a line), each with whether it
# holds Host, Content-Length and Accept-Encoding: a request's names seldom change, and the
# regex and the lower-case search cost more than the rest of the head. Bounded (``remember``):
# past it, each list is checked every time.
_NAME_LISTS: dict[str, tuple[bool, bool, bool]] = {}


def _name_list(names: str, headers: Mapping[str, str]) -> tuple[bool, bool, bool]:
    """Check ``names`` (one a line): every one a token, or InvalidHeader. Return whether they
    hold Host, Content-Length and Accept-Encoding, in any case."""
    if not _TOKENS.fullmatch(names):
        raise InvalidHeader(f"refusing to send the header {_first_bad(headers)!r} upstream")
    lower = f"\n{names.lower()}\n"
    present = ("\nhost\n" in lower, "\ncontent-length\n" in lower, "\naccept-encoding\n" in lower)
    return remember(_NAME_LISTS, names, present)


def _first_bad(headers: Mapping[str, str]) -> str:
    """The first header name that is not a token, or whose value would break the framing."""
    bad = (n for n, v in headers.items() if not _TOKEN.fullmatch(n) or _breaks_framing(v))
    return next(bad, "")


def _breaks_framing(value: str) -> bool:
    """Whether ``value`` holds a CR, LF or NUL, which would end a header line early.

    PERF: three substring scans (50 ns for a request's values) where a ``[\\x00\\r\\n]``
    regex search took 1.2 µs."""
    return "\n" in value or "\r" in value or "\x00" in value


def send_request(sock: socket.socket, head: bytes, body: Body, chunked: bool) -> None:
    """Send the head and the body (streamed in chunks; chunk-encoded when ``chunked``)."""
    if body is None or isinstance(body, bytes):
        if chunked:
            tail = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
            send_all(sock, head + tail)
        else:
            send_all(sock, head + body if body else head)
        return
    send_all(sock, head)
    for data in _pieces(body):
        if not data:
            continue
        if chunked:
            send_all(sock, b"%x\r\n" % len(data))
            send_all(sock, data)
            send_all(sock, b"\r\n")
        else:
            send_all(sock, data)
    if chunked:
        send_all(sock, b"0\r\n\r\n")


def _pieces(body: IO[bytes] | Iterable[bytes]) -> Iterator[bytes]:
    read = getattr(body, "read", None)
    if read is None:
        yield from body
        return
    while data := read(CHUNK):
        yield data


# PERF: a response header name is decoded and lower-cased once per process, not per answer
# (``remember``: bounded): the str is then shared, its hash already made for every set and
# dict that looks it up.
_NAMES: dict[bytes, str] = {}


class _PythonResponseState:
    """An answer's state, as the callbacks keep it, where ``gw.upstream._wire`` is not built;
    its compiled form is ``_wire.ResponseState`` (gw/upstream/_wire.c), which also holds the
    compiled callbacks. ``__new__`` starts it as the compiled form's does: nothing read yet."""

    __slots__ = (
        "_chunks",
        "_error",
        "_extra",
        "_head_done",
        "_head_request",
        "_interim",
        "_keep_alive",
        "_kept",
        "_parser",
        "_switched",
        "_until_close",
        "_upgrade",
        "complete",
        "early",
        "headers",
        "status",
    )
    headers: list[tuple[str, str]]
    _chunks: list[bytes]  # the body's pieces not handed on yet
    _parser: httptools.HttpResponseParser  # deleted once closed
    _kept: _wire.Collector | None
    early: bytes  # the bytes after a 101 answer's head (the connection is then a tunnel's)
    _error: MalformedResponse | None  # a callback's refusal, raised again by ``_feed``
    status: int
    _interim: int
    # Whether the whole answer, body included, has been read already (PERF: an attribute,
    # read once a request; only Response writes it).
    complete: bool
    _head_done: bool
    _until_close: bool
    _keep_alive: bool
    _extra: bool  # bytes after the end of the message: the connection is unusable
    _head_request: bool
    _upgrade: bool
    _switched: bool  # llhttp saw a 101 that switches (Connection: upgrade)

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        self = super().__new__(cls)
        self.headers, self._chunks, self._kept, self.early, self._error = [], [], None, b"", None
        self.status = self._interim = 0
        self.complete = self._head_done = self._until_close = self._keep_alive = False
        self._extra = self._head_request = self._upgrade = self._switched = False
        return self

    def take_usual(self, data: bytes, names: dict[bytes, str]) -> bool:
        """Read ``data``, the first bytes of an answer, when they hold the usual answer whole;
        return whether they did (else nothing is read, and llhttp reads them).

        The usual answer: ``HTTP/1.1``, a final status from 200 to 599 but 204 and 304, a
        reason of visible ASCII, fields whose names are tokens already in ``names`` (the
        table ``Response._on_header`` fills) with values of visible ASCII (no empty value, no
        trailing whitespace, no obs-fold), no Transfer-Encoding, Proxy-Connection or Upgrade
        field and no Connection field but ``keep-alive`` (which Node.js sends with every
        answer, and changes nothing on HTTP/1.1), one Content-Length of digits (an answer to
        HEAD too), and exactly that many body bytes after the head (none after the head of an
        answer to HEAD). Taken, it is what llhttp and the callbacks make of it: the fields, the
        body, complete, and a connection that may carry another request (HTTP/1.1 without
        Connection: close).

        This form takes none: the compiled one (gw/upstream/_wire.c) reads the usual answer.
        APPSEC: it decides nothing llhttp would decide otherwise; anything else, however
        harmless, is llhttp's. ``tests/unit/test_wire_compiled.py`` compares them.
        """
        return False


# PERF: the answer's state in a C struct and llhttp's callbacks on it in C (see
# gw/upstream/_wire.c); ``Response``'s Python callbacks below run wherever that form declines
# (an interim or a 101 answer, an invalid status, a transfer coding, ...) or is not built.
if TYPE_CHECKING or _COMPILED:  # noqa: SIM108 (mypy takes a base class from a plain alias)
    _ResponseState = _wire.ResponseState
else:
    _ResponseState = _PythonResponseState


class Response(_ResponseState):
    """One upstream response, read from ``sock``: the head at once, the body as it arrives.

    ``headers`` are ``(name, value)`` pairs in the order received, each name in lower case
    (HTTP names are case-insensitive, and gw's answers carry them in lower case)."""

    # PERF: no instance dict: one is made per proxied request, and ``close`` used to make
    # one of its inline values only to pop the parser out of it.
    __slots__ = ("_parsing", "_sock", "on_header")
    on_header: Callable[[bytes, bytes], None]
    _parsing: bool  # llhttp's parser is made and not dropped yet

    def __init__(self, sock: socket.socket, head_request: bool, upgrade: bool = False) -> None:
        """``upgrade``: gw asked to switch protocols, so a 101 is a final answer; the bytes
        after its head are kept in ``early`` (the connection is then a tunnel's)."""
        # (the answer's state starts as _ResponseState.__new__ made it: nothing read yet)
        self._sock = sock
        self._head_request = head_request
        self._upgrade = upgrade
        self._parsing = False
        try:
            self._read_head()
        except BaseException:
            self.close()
            raise

    def _start_parsing(self) -> None:
        """Make llhttp's parser of this answer."""
        # PERF: llhttp calls the compiled form of _on_header (gw/_collector.h): it keeps the
        # head's fields whose names are in _NAMES and hands every other one to _on_header,
        # which decides as before. Set before the parser, which looks the callbacks up once.
        if _Collector is None:
            self.on_header = self._on_header
        else:
            self._kept = self.on_header = _Collector(self._on_header, _NO_SIZE, MAX_HEADERS, _NAMES)
            self._kept.fields = self.headers
        self._parser = httptools.HttpResponseParser(self)
        self._parsing = True

    # -- llhttp callbacks (the Python forms; see _ResponseState) ----------------------------

    def _message_begin(self) -> None:
        if self.complete:
            self._extra = True

    def _on_header(self, name: bytes, value: bytes) -> None:
        if self._head_done:
            # APPSEC: a trailer field (after a chunked body), or a field of bytes after the
            # answer: never merged into the answer's header section (RFC 9110 section 6.5.1),
            # where a Set-Cookie or Location the upstream sent as a trailer would reach the
            # client as a header field. Dropped, as nginx drops an upstream's trailers.
            return
        if len(self.headers) >= MAX_HEADERS:
            self._error = MalformedResponse(f"more than {MAX_HEADERS} header fields")
            raise self._error
        # (the head's size is bounded by what ``_read_head`` feeds the parser)
        lower = _NAMES.get(name) or remember(_NAMES, name, name.decode("latin-1").lower())
        self.headers.append((lower, value.decode("latin-1")))

    def _headers_complete(self) -> None:
        if self.complete:
            return
        status = self._parser.get_status_code()
        if not 100 <= status <= 599:
            # APPSEC: RFC 9110 §15 calls any other status invalid (a client treats it as a 5xx);
            # llhttp reads any three digits. It is never passed on.
            self._error = MalformedResponse(f"the status {status} is not an HTTP status")
            raise self._error
        if status == 101 and self._upgrade:
            self.status = status
            self._head_done = self.complete = True
            if self._kept is not None:
                self._kept.fields = None
            return
        if status < 200:
            self._interim_answer(status)
            return
        names = set(map(field_name, self.headers))  # PERF: no Python step per field
        if "transfer-encoding" in names:
            self._check_transfer_coding()
        self.status = status
        self._head_done = True
        if self._kept is not None:
            self._kept.fields = None  # a trailer field is _on_header's (it drops them)
        if self._head_request:
            self.complete = True  # a HEAD response has no body, whatever it announces
            self._keep_alive = self._parser.should_keep_alive()
            return
        no_body = status in (204, 304)
        self._until_close = not no_body and not names & {"content-length", "transfer-encoding"}

    def _check_transfer_coding(self) -> None:
        """Refuse a final answer whose Transfer-Encoding is anything but one ``chunked``.

        APPSEC: llhttp reads ``gzip, chunked`` as chunked and leaves the gzip on the content,
        reads ``chunked ,`` or ``identity`` until the close, and decodes chunked HTTP/1.0
        (whose framing RFC 9112 §6.1 calls faulty). Each would pass on bytes the upstream did
        not mean as the content, so each is a 502, as nginx answers an unknown coding.
        """
        codings = [v for n, v in self.headers if n == "transfer-encoding"]
        if len(codings) > 1 or not chunked_only(codings[0]):
            self._error = MalformedResponse(f"the transfer coding {', '.join(codings)!r}")
        elif self._parser.get_http_version() != "1.1":
            self._error = MalformedResponse("an HTTP/1.0 answer with a transfer coding")
        if self._error is not None:
            raise self._error

    def _interim_answer(self, status: int) -> None:
        """Skip a 1xx answer (100 Continue, 103 Early Hints) to wait for the final one.

        APPSEC: an upstream may not switch protocols unasked (``upgrade``) or hold the exchange
        open with endless interim answers: each is a MalformedResponse (502), never passed on.
        """
        self._interim += 1
        if status == 101:
            self._error = MalformedResponse("the upstream switched protocols")
        elif self._interim > MAX_INTERIM:
            self._error = MalformedResponse(f"more than {MAX_INTERIM} interim (1xx) answers")
        if self._error is not None:
            raise self._error
        self.headers = []  # the head size limit still counts the interim answers' bytes
        if self._kept is not None:
            self._kept.fields = self.headers

    def _body(self, body: bytes) -> None:
        if self.complete:
            # APPSEC: body bytes after the answer is complete (a HEAD answered with a body):
            # the upstream and gw disagree on the framing, so the connection is never reused.
            self._extra = True
        elif self._head_done:
            self._chunks.append(body)

    def _message_complete(self) -> None:
        if self._head_done and not self.complete:
            self.complete = True
            self._keep_alive = self._parser.should_keep_alive()  # llhttp resets it afterwards

    if not _COMPILED:  # not built: the Python forms are the callbacks
        on_message_begin = _message_begin
        on_headers_complete = _headers_complete
        on_body = _body
        on_message_complete = _message_complete

    # -- reading ---------------------------------------------------------------------------

    @property
    def reusable(self) -> bool:
        """Whether the connection may carry another request once the body has been read."""
        return self.complete and not self._extra and not self._until_close and self._keep_alive

    @property
    def content_length(self) -> int | None:
        for name, value in self.headers:
            if name == "content-length" and value.isdigit():
                return int(value)
        return None

    def body(self, deadline: float | None = None) -> Iterator[bytes]:
        """Yield the body as it arrives, undecoded, all of it by ``deadline`` (monotonic).

        APPSEC: the socket's timeout bounds each silence; ``deadline`` bounds the whole body,
        so an upstream that drips its answer cannot hold the exchange (and the client's
        connection) past the route's deadline.

        Raises:
            BodyBrokenOff: the connection ended before the framing said the body was complete.
            MalformedResponse: the body's framing (chunk sizes) is not valid.
            OSError: the socket failed or timed out (TimeoutError at ``deadline`` too).
        """
        silence = self._sock.timeout
        try:
            while True:
                if self._chunks:
                    chunks, self._chunks = self._chunks, []
                    yield from chunks
                if self.complete:
                    return
                if deadline is not None:
                    self._sock.settimeout(_body_wait(deadline, silence))
                data = receive(self._sock, CHUNK)
                if not data:
                    if self._until_close:
                        self.complete = True
                        return
                    raise BodyBrokenOff("the connection closed before the body was complete")
                self._feed(data)
        finally:
            if deadline is not None and self._sock.timeout != silence:
                self._sock.settimeout(silence)
            self.close()

    def in_hand(self) -> list[bytes]:
        """The whole body of an answer that is ``complete``: what ``body()`` would yield, with
        nothing to wait for. The parser is dropped, as ``body()`` drops it."""
        assert self.complete, "in_hand() of an answer still being read"
        chunks, self._chunks = self._chunks, []
        self.close()
        return chunks

    def close(self) -> None:
        """Drop the parser once the response is read or abandoned.

        PERF: the parser holds this object's bound methods and this object holds the parser; a
        cycle per request left for the garbage collector made its pauses the p99 latency.
        """
        if self._parsing:  # PERF: a flag, where hasattr raised an AttributeError for an
            # answer read without a parser (take_usual)
            self._parsing = False
            del self._parser, self.on_header  # the collector refers back too
            self._kept = None

    def _read_head(self) -> None:
        """Read until the final answer's head is parsed: within the socket's timeout, all of it.

        APPSEC: the socket's timeout (the read timeout) bounds each silence, and the head as a
        whole, interim answers included, must arrive within that same time: an upstream that
        drips it a byte at a time cannot hold the exchange for ``MAX_HEAD_BYTES`` timeouts.
        PERF: a head that comes in one read (nearly all) costs no timeout changes; the
        socket's ``timeout`` attribute is read, not ``gettimeout()`` (Python code in gevent).
        """
        timeout = self._sock.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        received = 0
        while not self._head_done:
            if received >= MAX_HEAD_BYTES:
                raise MalformedResponse(f"a response head over {MAX_HEAD_BYTES} bytes")
            if received and deadline is not None:
                self._sock.settimeout(_time_left(deadline))
            # APPSEC: the parser is never fed more than MAX_HEAD_BYTES before the head is done,
            # so no head over it (status line, interim answers and blank line included) is read
            left = MAX_HEAD_BYTES - received
            data = receive(self._sock, CHUNK if left > CHUNK else left)  # PERF: not min()
            if not data:
                if received == 0:
                    raise UpstreamClosed("the upstream closed the connection without answering")
                raise MalformedResponse("the connection closed inside the response head")
            if not received:
                # PERF: the usual answer, whole in its first read (nearly every one), is read
                # without llhttp, its parser and its callbacks (take_usual); the rest is theirs.
                if self.take_usual(data, _NAMES):
                    return
                self._start_parsing()
            received += len(data)
            self._feed(data)
        if self.status == 101 and not self._switched:
            # APPSEC: without "Connection: upgrade" llhttp reads what follows as another
            # answer, so the protocol's first bytes would be lost (or taken for HTTP).
            raise MalformedResponse("a 101 answer without Connection: upgrade")
        if self._sock.timeout != timeout:
            self._sock.settimeout(timeout)  # the body's reads wait up to the read timeout again

    def _feed(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as ex:
            # Only after a 101 gw asked for (any other final answer is not an upgrade).
            self._switched = True
            self.early = data[ex.args[0] :]
        except httptools.HttpParserError as ex:  # HttpParserCallbackError is one too
            if not self.complete:
                # a callback's refusal with its own words (not llhttp's "User callback error")
                raise self._error or MalformedResponse(str(ex)) from None
            self._extra = True  # garbage after a complete answer: keep the answer, drop the conn


def _time_left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the response head did not arrive within the read timeout")
    return left


def _body_wait(deadline: float, silence: float | None) -> float:
    """Seconds the next body read may wait: the read timeout, cut short at the deadline.

    Raises:
        TimeoutError: the deadline has passed.
    """
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the answer's deadline passed while its body was read")
    return left if silence is None else min(silence, left)
