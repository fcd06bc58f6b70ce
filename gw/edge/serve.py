"""HTTP/1.1 on one client connection, for gw's gevent worker: requests parsed by llhttp (the
parser Node.js uses, through ``httptools``), handed to the WSGI app, answers written back.

PERF: gunicorn's own request parser, environ builder and response writer cost about 130 µs of
CPU per request on the bench box, a quarter of what a proxied request cost in all. The same
work here is a few C calls and one ``sendall`` for a small answer.

What it promises, in the terms of RFC 9112:

- Strict parsing: llhttp's default (non-lenient) mode refuses obsolete line folding, bare CR or
  LF, a Content-Length together with Transfer-Encoding, duplicate or invalid Content-Length,
  a Transfer-Encoding other than a final ``chunked``, and invalid name or value characters.
  Header names with an underscore are dropped, as gunicorn does, so ``X_User_Id`` can never
  pose as ``X-User-Id`` once both are folded into the WSGI ``HTTP_X_USER_ID`` key.
- Limits as gunicorn's settings name them: ``limit_request_line`` (414),
  ``limit_request_fields`` and ``limit_request_field_size`` (431). The head must arrive
  within ``keepalive`` seconds; body reads and writes time out after ``timeout`` seconds.
- Persistent connections: HTTP/1.1 keep-alive unless either side says ``close``, HTTP/1.0
  only with ``Connection: keep-alive``; pipelined requests are answered in order.
  ``Expect: 100-continue`` is answered when the app first reads the body, so a request refused
  before that (401, 413, 429) never has its body sent at all.
- Framing of answers: the app's Content-Length, else chunked for HTTP/1.1, else the end of the
  connection. An app body that fails part-way (an upstream that broke off) ends the connection
  without the final chunk, so the client sees a broken response, never a clean short one.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from email.utils import formatdate
from typing import Any, NamedTuple
from urllib.parse import unquote_to_bytes

import httptools

from gw.core.headers import HOP_BY_HOP, chunked_only  # HOP_BY_HOP: not for a WSGI app (PEP 3333)
from gw.errors import UploadTooSlow

log = logging.getLogger("gw.serve")

CHUNK = 64 * 1024
IDLE_POLL = 0.5  # seconds between checks for a worker shutdown while a connection is idle
_NO_BODY_STATUSES = frozenset({204, 304})
_REASONS = {
    400: "Bad Request",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    505: "HTTP Version Not Supported",
}
# APPSEC: chunk framing (sizes, extensions, CRLFs) allowed beyond the data, per chunk and in
# all, before a request is refused; Go's net/http chunked reader uses the same 16-byte rule.
# Extensions are never forwarded, so without a bound they would be free, unlimited input.
_FORBIDDEN_TRAILERS = frozenset(
    {b"host", b"content-length", b"transfer-encoding", b"trailer", b"authorization", b"te"}
)
_SINGLETONS = frozenset({"HTTP_HOST", "CONTENT_TYPE"})
_FRAMING_PER_CHUNK = 16
_FRAMING_SLACK = CHUNK + 16 * 1024
_GONE = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN)

App = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
ErrorWriter = Callable[[Any, int, str, str], None]


class Limits(NamedTuple):
    """Per-connection limits, from gunicorn's settings of the same names."""

    request_line: int = 8190
    fields: int = 100
    field_size: int = 8190
    keepalive: float = 5.0  # seconds to wait for (the whole head of) the next request
    timeout: float = 30.0  # seconds one body read or write may block
    requests: int = 200  # requests per connection before "Connection: close" (rotation)


class WaitingConnections:
    """The connections of one worker that wait for a request head, longest-waiting first.

    When the worker is at its connection cap, the one that has waited longest is shed to make
    room, as nginx reuses its idle keep-alive connections when it runs out of connections. A
    connection whose request is being served (app running, body uploading) is never shed.
    """

    def __init__(self) -> None:
        # PERF: a dict keeps insertion order; adding and removing are O(1).
        self._waiting: dict[Connection, None] = {}

    def waiting(self, conn: Connection) -> None:
        self._waiting[conn] = None

    def working(self, conn: Connection) -> None:
        self._waiting.pop(conn, None)

    def __len__(self) -> int:
        return len(self._waiting)

    def shed_oldest(self) -> bool:
        """Close the connection that has waited longest; False when none waits."""
        conn = next(iter(self._waiting), None)
        if conn is None:
            return False
        del self._waiting[conn]
        conn.shed()
        return True


class RequestRefused(Exception):
    """A request that cannot be parsed or exceeds a limit; answered, then the connection ends."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ClientGone(Exception):
    """The client closed or reset the connection, or stopped sending in time."""


class _Message:
    """One request as llhttp reports it: the head, then body pieces as they are parsed."""

    __slots__ = (
        "body_bytes",
        "chunk_count",
        "chunks",
        "complete",
        "framing_bytes",
        "head_done",
        "headers",
        "keep_alive",
        "method",
        "upgrade",
        "url",
        "version",
    )

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.chunks: deque[bytes] = deque()
        self.complete = False
        self.keep_alive = False
        self.method = "GET"
        self.version = "1.1"
        self.upgrade = False
        self.body_bytes = 0  # body bytes parsed so far
        self.chunk_count = 0
        self.framing_bytes = 0  # bytes read while in the body: data and chunk framing


class Connection:
    """Serve the requests of one client connection until it ends."""

    def __init__(
        self,
        sock: socket.socket,
        client: Any,
        server: Any,
        app: App,
        limits: Limits,
        base_environ: dict[str, Any],
        write_error: ErrorWriter,
        next_request: Callable[[], bool],
        running: Callable[[], bool],
        pause: Callable[[], None],
        waiting: WaitingConnections | None = None,
    ) -> None:
        """``next_request`` is called once per request and says whether the worker goes on;
        when it says no, the answer closes the connection. ``running`` says the same without
        counting: once it says no, a connection waiting for its next request is closed.
        ``pause`` lets the worker's other ready connections run (``gw.edge.worker.take_turns``).
        ``waiting`` is told when this connection waits for a head (it may then be shed)."""
        self.sock = sock
        self.app = app
        self.limits = limits
        self.write_error = write_error
        self.next_request = next_request
        self.running = running
        self.pause = pause
        self._waiting = waiting if waiting is not None else WaitingConnections()
        self._base = dict(base_environ)
        self._base.update(_address_environ(client, server))
        self._parser = httptools.HttpRequestParser(self)
        # Any version digits parse; on_headers_complete decides (1.x served, others refused).
        self._parser.set_dangerous_leniencies(lenient_version=True)
        self._messages: deque[_Message] = deque()
        self._parsing: _Message | None = None
        self._eof = False
        self._upgraded = False
        self._last_request = False  # a request said close: what follows is never parsed

    # -- llhttp callbacks (the parser runs inside ``_fill``) ----------------------------------

    def on_message_begin(self) -> None:
        self._parsing = _Message()
        self._messages.append(self._parsing)

    def on_url(self, url: bytes) -> None:
        message = self._current()
        message.url += url
        if len(message.url) > self.limits.request_line:
            raise RequestRefused(414, f"request line over {self.limits.request_line} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        message = self._current()
        limits = self.limits
        # "Name: value" and its CRLF, as gunicorn counts a field line against its limit.
        if len(name) + len(value) + 4 > limits.field_size:
            raise RequestRefused(431, f"a header field over {limits.field_size} bytes")
        if message.head_done:
            # APPSEC: a trailer field (after a chunked body) is never merged into the header
            # section (RFC 9110 section 6.5.1): trailers are dropped (their bytes count as
            # chunk framing, see _check_chunk_framing), and one that would frame, route or
            # authenticate is refused outright, as gunicorn does.
            if name.lower() in _FORBIDDEN_TRAILERS:
                raise RequestRefused(400, f"{name.decode('latin-1')} is not allowed in trailers")
            return
        if len(message.headers) >= limits.fields:
            raise RequestRefused(431, f"more than {limits.fields} header fields")
        if name.lower() == b"transfer-encoding":
            _check_transfer_coding(value)
        message.headers.append((name, value))

    def on_headers_complete(self) -> None:
        message = self._current()
        parser = self._parser
        message.method = parser.get_method().decode("ascii")
        message.version = _served_version(parser.get_http_version())
        line = len(message.method) + len(message.url) + len(" HTTP/1.1") + 1
        if line > self.limits.request_line:
            raise RequestRefused(414, f"request line over {self.limits.request_line} bytes")
        message.keep_alive = parser.should_keep_alive()
        message.upgrade = parser.should_upgrade()
        if message.version == "1.0" and _has(message, b"transfer-encoding"):
            # APPSEC: HTTP/1.0 has no chunked coding (RFC 9112 section 6.1); a 1.0 peer in
            # the path could read the same bytes with other boundaries.
            raise RequestRefused(400, "Transfer-Encoding is not allowed in an HTTP/1.0 request")
        if message.upgrade:
            _check_upgrade(message)
        message.head_done = True

    def on_body(self, body: bytes) -> None:
        message = self._current()
        message.body_bytes += len(body)
        message.chunks.append(body)

    def on_chunk_header(self) -> None:
        self._current().chunk_count += 1

    def on_message_complete(self) -> None:
        message = self._current()
        message.complete = True
        if not message.keep_alive:
            self._last_request = True

    def _current(self) -> _Message:
        assert self._parsing is not None
        return self._parsing

    # -- the connection loop ---------------------------------------------------------------

    def serve(self) -> None:
        """Answer requests until the client leaves, a limit is hit, or the worker stops."""
        served = 0
        try:
            while True:
                message = self._next_head()
                if message is None:
                    return
                served += 1
                keep = self._answer(message, served)
                if not keep:
                    return
                # PERF: a fair share for every connection. When the upstream has answered and
                # the client has sent its next request before this greenlet asks (the peers
                # run on the other core), no read ever waits, and one connection could keep
                # the worker for hundreds of requests while the others' answers sit unread:
                # on the bench that made the p99 at 64 connections 230-520 ms (with this
                # pause, 35-42 ms; the Express cluster's was 27-34 ms).
                self.pause()
        except RequestRefused as ex:
            self._refuse(ex)
        except ClientGone:
            pass
        except OSError as ex:
            if ex.errno not in _GONE:
                log.warning("client connection failed: %s", ex)
        finally:
            self._waiting.working(self)
            del (
                self._parser
            )  # PERF: it refers back to this object (see gw.upstream.wire.Response.close)

    def _next_head(self) -> _Message | None:
        """Return the next request with its head parsed, or None when the client is done."""
        messages = self._messages
        if messages and not messages[0].complete:
            return None  # the previous request's body is still unread: never resynchronise
        if messages:
            messages.popleft()
        if self._upgraded or self._last_request:
            return None
        started = time.monotonic()
        received = 0
        limit = self.limits.request_line + self.limits.fields * self.limits.field_size
        self.sock.settimeout(min(IDLE_POLL, self.limits.keepalive))
        if not (messages and messages[0].head_done):
            self._waiting.waiting(self)
        while not (messages and messages[0].head_done):
            if self._eof:
                if messages or received:
                    raise RequestRefused(400, "the connection ended inside a request head")
                return None
            try:
                received += self._fill()
            except TimeoutError:
                if not (received or messages or self.running()):
                    return None  # the worker is stopping: idle connections go at once
            if received > limit:
                raise RequestRefused(431, "request head too large")
            if time.monotonic() - started > self.limits.keepalive:
                return None  # idle, or too slow with its head: close quietly, like gunicorn
        self._waiting.working(self)
        self.sock.settimeout(self.limits.timeout)
        return messages[0]

    def shed(self) -> None:
        """End this connection while it waits for a head (the worker is at its cap)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # its recv returns at once with EOF

    def _fill(self) -> int:
        """Read once from the client and parse what came; return the byte count (0 at EOF)."""
        try:
            data = self.sock.recv(CHUNK)
        except OSError as ex:
            if isinstance(ex, TimeoutError):
                raise
            raise ClientGone(str(ex)) from None
        if not data:
            self._eof = True
            return 0
        if self._last_request:
            return len(data)  # after "Connection: close": read and dropped, never parsed
        parsing = self._parsing
        if parsing is not None and parsing.head_done and not parsing.complete:
            parsing.framing_bytes += len(data)
        self._feed(data)
        if parsing is not None and parsing.chunk_count:
            _check_chunk_framing(parsing)
        return len(data)

    def _feed(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._upgraded = True  # what follows the head is not HTTP/1: answer, then close
        except httptools.HttpParserCallbackError as ex:
            cause = ex.__context__
            if isinstance(cause, RequestRefused):
                raise cause from None
            raise RequestRefused(400, str(ex)) from None
        except httptools.HttpParserError as ex:
            if self._last_request:
                return  # bytes after a request that said close: it is answered all the same
            raise RequestRefused(400, f"malformed request: {ex}") from None

    def _answer(self, message: _Message, served: int) -> bool:
        """Run the app for one request; return whether the connection may carry another."""
        environ = self._environ(message)
        reply = _Reply(self.sock, message, self.next_request() and served < self.limits.requests)
        body = _Input(self, message)
        environ["wsgi.input"] = body
        try:
            result = self.app(environ, reply.start_response)
        except Exception:
            log.exception("the app failed before answering")
            if not reply.started:
                self.write_error(self.sock, 500, "Internal Server Error", "internal error")
            return False
        try:
            reply.send(result)
        except OSError:
            raise
        except Exception:
            log.exception("the app failed before its answer began")
            self.write_error(self.sock, 500, "Internal Server Error", "internal error")
            return False
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        if not reply.keep_alive or self._upgraded:
            return False
        if not message.complete:
            self._linger()  # the app left body bytes unread: never parse them as a request
            return False
        return True

    def _environ(self, message: _Message) -> dict[str, Any]:
        raw_uri = message.url.decode("latin-1")
        path, _, query = raw_uri.partition("?")
        if not path.startswith("/"):
            path = _absolute_path(path)  # the pipeline reads the authority from RAW_URI
        environ = self._base.copy()
        environ["REQUEST_METHOD"] = message.method
        environ["RAW_URI"] = raw_uri
        environ["PATH_INFO"] = unquote_to_bytes(path).decode("latin-1")
        environ["QUERY_STRING"] = query
        environ["SERVER_PROTOCOL"] = f"HTTP/{message.version}"
        for raw_name, raw_value in message.headers:
            if b"_" in raw_name:
                continue  # APPSEC: see the module docstring (header names with underscores)
            key = raw_name.decode("latin-1").upper().replace("-", "_")
            if key != "CONTENT_TYPE" and key != "CONTENT_LENGTH":
                key = "HTTP_" + key
            value = raw_value.decode("latin-1").rstrip(" \t")  # llhttp keeps trailing OWS
            if key in environ:
                if key in _SINGLETONS:
                    # APPSEC: two Host or Content-Type fields cannot be merged (RFC 9110
                    # section 5.3); joined, they would be read differently downstream.
                    raise RequestRefused(400, f"more than one {raw_name.decode('latin-1')} field")
                environ[key] += "," + value
            else:
                environ[key] = value
        return environ

    def read_body(self, message: _Message, deadline: float | None = None) -> bytes:
        """Return the next body piece of ``message`` (b"" at its end), reading as needed.

        Raises:
            UploadTooSlow: no piece came before ``deadline`` (``time.monotonic()`` seconds).
            ClientGone: the client closed, or sent nothing for ``limits.timeout`` seconds.
        """
        try:
            while not message.chunks:
                if message.complete:
                    return b""
                if self._eof:
                    raise ClientGone("the client closed the connection inside the request body")
                if deadline is not None:
                    wait = min(self.limits.timeout, deadline - time.monotonic())
                    self.sock.settimeout(max(0.001, wait))
                try:
                    self._fill()
                except TimeoutError:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise UploadTooSlow("the request body arrives too slowly") from None
                    raise ClientGone("the client stopped sending its body") from None
            return message.chunks.popleft()
        finally:
            if deadline is not None:
                self.sock.settimeout(self.limits.timeout)

    def _refuse(self, ex: RequestRefused) -> None:
        reason = _REASONS.get(ex.status, "Bad Request")
        try:
            self.write_error(self.sock, ex.status, reason, ex.message)
        except OSError:
            return
        self._linger()

    def _linger(self) -> None:
        """Close after reading what the client still sends (briefly), so that unread bytes do
        not turn the close into a reset that destroys the answer just written."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
            self.sock.settimeout(1.0)
            deadline = time.monotonic() + 2.0
            drained = 0
            while time.monotonic() < deadline and drained < 1 << 20:
                data = self.sock.recv(CHUNK)
                if not data:
                    break
                drained += len(data)
        except OSError:
            pass


class _Input:
    """``wsgi.input``: the request body as the client sends it, read on demand."""

    def __init__(self, conn: Connection, message: _Message) -> None:
        self._conn = conn
        self._message = message
        self._buffer = b""
        self._min_rate = 0.0
        self._started = 0.0
        self._received = 0
        expect = next((v for n, v in message.headers if n.lower() == b"expect"), b"")
        # HTTP/1.0 has no 100 (Continue): a 1.0 client's Expect is ignored (RFC 9110 10.1.1).
        self._continue = (
            expect.lower() == b"100-continue" and not message.complete and message.version != "1.0"
        )

    def require_rate(self, min_rate: float, grace: float) -> None:
        """Answer 408 (``UploadTooSlow``) once the body falls below ``min_rate`` bytes per
        second, counted after ``grace`` seconds from now (``server.min_upload_rate``).

        APPSEC: a client that trickles its body would hold this connection (and, while the
        body streams, an upstream connection) for as long as it likes.
        """
        self._min_rate = min_rate
        self._started = time.monotonic() + grace

    def _next(self) -> bytes:
        if self._continue:
            self._continue = False
            self._conn.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        deadline = None
        if self._min_rate:
            deadline = self._started + (self._received + 1) / self._min_rate
        piece = self._conn.read_body(self._message, deadline)
        self._received += len(piece)
        return piece

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            parts = [self._buffer]
            self._buffer = b""
            while piece := self._next():
                parts.append(piece)
            return b"".join(parts)
        parts, have = [self._buffer], len(self._buffer)
        while have < size:
            piece = self._next()
            if not piece:
                break
            parts.append(piece)
            have += len(piece)
        data = b"".join(parts)
        self._buffer = data[size:]
        return data[:size]

    def readline(self, size: int | None = -1) -> bytes:
        while b"\n" not in self._buffer and (size is None or size < 0 or len(self._buffer) < size):
            piece = self._next()
            if not piece:
                break
            self._buffer += piece
        end = self._buffer.find(b"\n") + 1 or len(self._buffer)
        if size is not None and size >= 0:
            end = min(end, size)
        line, self._buffer = self._buffer[:end], self._buffer[end:]
        return line

    def readlines(self, hint: int = -1) -> list[bytes]:
        return list(self)

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line


class _Reply:
    """The answer to one request: ``start_response`` and the framing of the body."""

    def __init__(self, sock: socket.socket, message: _Message, keep_alive: bool) -> None:
        self.sock = sock
        self.message = message
        self.keep_alive = keep_alive and message.keep_alive and not message.upgrade
        self.started = False  # the head has been sent
        self._status = ""
        self._headers: list[tuple[str, str]] = []
        self._length: int | None = None
        self._chunked = False
        self._bodyless = message.method == "HEAD"
        self._sent = 0

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None and self.started:
            raise exc_info[1].with_traceback(exc_info[2])
        self._status = status
        self._headers = headers
        return self._write_legacy

    def send(self, body: Iterable[bytes]) -> None:
        """Send the head and the body; end the connection if the body fails part-way.

        Raises:
            OSError: writing to the client failed.
            Exception: the app failed before calling ``start_response``.
        """
        pieces = iter(body)
        while True:
            try:
                data = next(pieces)
            except StopIteration:
                break
            except Exception as ex:
                if not self._status:
                    raise
                log.warning("the answer broke off: %s", ex)
                self.keep_alive = False  # no final chunk, no full length: visibly broken
                if not self.started:
                    self._write(b"")
                return
            if data:
                self._write(data)
        if not self.started:
            self._write(b"")
        elif self._chunked:
            self.sock.sendall(b"0\r\n\r\n")
        if self._length is not None and self._sent < self._length and not self._bodyless:
            self.keep_alive = False  # short body: the client must see the connection end

    def _write_legacy(self, data: bytes) -> None:
        if data:
            self._write(data)

    def _write(self, data: bytes) -> None:
        if not self.started:
            self.sock.sendall(self._head() + self._frame(data))
            self.started = True
            return
        self.sock.sendall(self._frame(data))

    def _frame(self, data: bytes) -> bytes:
        if not data or self._bodyless:
            return b""
        if self._length is not None:
            room = self._length - self._sent
            if len(data) > room:
                data = data[:room]  # never more than announced
                self.keep_alive = False
        self._sent += len(data)
        if self._chunked:
            return b"%x\r\n%s\r\n" % (len(data), data)
        return data

    def _head(self) -> bytes:
        status = self._status
        code = int(status[:3])
        if code in _NO_BODY_STATUSES or code < 200:
            self._bodyless = True
        lines = [f"HTTP/1.1 {status}"]
        has_date = False
        for name, value in self._headers:
            lname = name.lower()
            if lname in HOP_BY_HOP:
                if lname == "connection" and "close" in value.lower():
                    self.keep_alive = False
                continue
            if lname == "content-length":
                self._length = int(value)
            elif lname == "date":
                has_date = True
            lines.append(f"{name}: {value}")
        if not has_date:
            lines.append(f"Date: {_http_date()}")
        if self._length is None and not self._bodyless:
            if self.message.version == "1.1":
                self._chunked = True
                lines.append("Transfer-Encoding: chunked")
            else:
                self.keep_alive = False  # HTTP/1.0: the end of the connection ends the body
        # Said in both cases, as gunicorn does: clients and tests read it either way.
        lines.append("Connection: keep-alive" if self.keep_alive else "Connection: close")
        # APPSEC: the app's header names and values must not split the answer into more lines
        # (a CR or LF from an upstream value would forge headers or a second response).
        probe = "".join(lines)
        if "\n" in probe or "\r" in probe:
            raise ValueError("a response header contains CR or LF")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


_date_cache = (0, "")


def _http_date() -> str:
    """Return the current HTTP date, formatted once per second (PERF)."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]


def _address_environ(client: Any, server: Any) -> dict[str, str]:
    """REMOTE_* and SERVER_* keys; a unix socket peer has no address (REMOTE_ADDR is '')."""
    environ = {"REMOTE_ADDR": "", "SERVER_NAME": "localhost", "SERVER_PORT": ""}
    if isinstance(client, tuple) and client:
        environ["REMOTE_ADDR"] = str(client[0])
        environ["REMOTE_PORT"] = str(client[1])
    if isinstance(server, tuple) and server:
        environ["SERVER_NAME"] = str(server[0])
        environ["SERVER_PORT"] = str(server[1])
    return environ


def _served_version(version: str) -> str:
    """Return the version answered: 1.0, or 1.1 for any later 1.x (RFC 9110 section 2.5).

    Raises:
        RequestRefused: 505 for HTTP/2 and later (gw speaks HTTP/1.1 only), 400 for HTTP/0.9.
    """
    if version == "1.1" or version == "1.0":
        return version
    if version.startswith("1."):
        return "1.1"
    if version.startswith("0."):
        raise RequestRefused(400, "HTTP/0.9 requests are not served")
    raise RequestRefused(505, f"HTTP/{version} is not supported: gw speaks HTTP/1.1")


def _check_transfer_coding(value: bytes) -> None:
    """Refuse any transfer coding but a lone ``chunked`` (RFC 9112 section 6.1: 501)."""
    coding = value.decode("latin-1")
    if not chunked_only(coding):
        raise RequestRefused(
            501, f"transfer coding {coding[:60]!r} is not supported (only chunked)"
        )


def _check_upgrade(message: _Message) -> None:
    """Refuse what llhttp cannot frame: an Upgrade or CONNECT request with a body.

    APPSEC: for both, llhttp skips the body and hands the rest of the stream over as another
    protocol; gw does not switch protocols, so it would forward the request without the body
    its Content-Length announces, and the upstream would take the next bytes as that body.
    Without a body the request is answered (CONNECT: 405 unless a route names it) and the
    connection closed.
    """
    if _has(message, b"transfer-encoding") or any(
        name.lower() == b"content-length" and value.strip() != b"0"
        for name, value in message.headers
    ):
        raise RequestRefused(400, "a request that asks for a protocol upgrade must have no body")


def _check_chunk_framing(message: _Message) -> None:
    framing = message.framing_bytes - message.body_bytes
    if framing > _FRAMING_PER_CHUNK * message.chunk_count + _FRAMING_SLACK:
        raise RequestRefused(400, "too many bytes of chunk framing (extensions) for the data")


def _has(message: _Message, name: bytes) -> bool:
    return any(n.lower() == name for n, _ in message.headers)


def _absolute_path(target: str) -> str:
    """The path of an absolute-form target (``http://host/p`` -> ``/p``), else the target."""
    scheme, sep, rest = target.partition("://")
    if not sep or not scheme.isalpha():
        return target
    slash = rest.find("/")
    return rest[slash:] if slash >= 0 else "/"
