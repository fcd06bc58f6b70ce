"""HTTP/1.1 on one client connection: llhttp's callbacks, the request loop, the refusals.

For gw's gevent worker: requests parsed by llhttp (the parser Node.js uses, through
``httptools``) under the rules of ``gw.edge.request``, handed to the WSGI app (the environ of
``gw.edge.environ``), answered by ``gw.edge.reply``.

PERF: gunicorn's own request parser, environ builder and response writer cost about 130 µs of
CPU per request on the bench box, a quarter of what a proxied request cost in all. The same
work here is a few C calls and one ``sendall`` for a small answer.

What it promises, in the terms of RFC 9112:

- Limits as gunicorn's settings name them: ``limit_request_line`` (414),
  ``limit_request_fields`` and ``limit_request_field_size`` (431). The head must arrive
  within ``keepalive`` seconds; body reads and writes time out after ``timeout`` seconds.
- Persistent connections: HTTP/1.1 keep-alive unless either side says ``close``, HTTP/1.0
  only with ``Connection: keep-alive``; pipelined requests are answered in order.
  ``Expect: 100-continue`` is answered when the app first reads the body, so a request refused
  before that (401, 413, 429) never has its body sent at all.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import httptools

from gw.edge.environ import address_environ, build_environ
from gw.edge.relay import relay
from gw.edge.reply import Reply
from gw.edge.request import (
    CHUNK,
    ClientGone,
    Limits,
    Message,
    RequestRefused,
    check_chunk_framing,
    check_transfer_coding,
    check_upgrade,
    has_header,
    served_version,
)
from gw.edge.tunnel import SWITCH, Switch
from gw.edge.upload import Input
from gw.edge.waiting import WaitingConnections
from gw.errors import UploadTooSlow
from gw.host.process import receive

log = logging.getLogger("gw.serve")

try:
    from gw.edge._requestfields import Callbacks, Collector
except ImportError:  # built without a C compiler (setup.py: optional)
    Callbacks = Collector = None  # type: ignore[assignment,misc]

IDLE_POLL = 0.5  # seconds between checks for a worker shutdown while a connection is idle
_REASONS = {
    400: "Bad Request",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    505: "HTTP Version Not Supported",
}
_FORBIDDEN_TRAILERS = frozenset(
    {b"host", b"content-length", b"transfer-encoding", b"trailer", b"authorization", b"te"}
)
_GONE = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN)
# The callbacks of gw/edge/_requestfields.c's Callbacks, installed when it is built.
_COMPILED_CALLBACKS = ("on_message_begin", "on_url", "on_headers_complete", "on_message_complete")


def _takes_none(data: bytes) -> bool:
    """Read ``data`` as one request when it is the usual request whole, as llhttp and the
    callbacks would read it; return whether it was (else llhttp reads it).

    The usual request: GET, HEAD, DELETE or OPTIONS, an origin-form target of RFC 3986's
    characters (no '#'), ``HTTP/1.1``, fields whose names are tokens and whose values are
    visible ASCII (not empty, no trailing whitespace, no obs-fold), within the limits (the
    request line, a field's size, the count), no Content-Length, Proxy-Connection,
    Transfer-Encoding or Upgrade field and no Connection field but ``keep-alive`` (llhttp
    reads those; ``keep-alive`` alone changes nothing on HTTP/1.1), and nothing after the
    empty line. Taken, it is the complete message the callbacks make of it, kept alive. Only
    between two requests: llhttp is then at a message's start, and stays there.

    This form takes none: the compiled one (``Callbacks.take``, gw/edge/_requestfields.c)
    reads the usual request; a connection's ``_take`` is one or the other. APPSEC: it
    decides nothing llhttp would decide otherwise, and refuses nothing; anything else,
    however harmless, is llhttp's (and its refusals). ``tests/unit/test_edge_request_compiled.py``
    compares them.
    """
    return False


App = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
ErrorWriter = Callable[[Any, int, str, str], None]


class _NotKept:
    """Where the compiled collector is not built: its ``fields`` are set and never read."""

    __slots__ = ("fields",)

    def __init__(self) -> None:
        self.fields: list[tuple[bytes, bytes]] | None = None


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
        ``pause`` lets the worker's other ready connections run (``gw.edge.worker.Turns``).
        ``waiting`` is told when this connection waits for a head (it may then be shed)."""
        self.sock = sock
        self.app = app
        self.limits = limits
        # A head's most bytes, and how long one wait for it lasts before the worker's stop and
        # the keep-alive limit are checked again (the socket's timeout stays limits.timeout).
        self._head_most = limits.request_line + limits.fields * limits.field_size
        self._idle_wait = min(IDLE_POLL, limits.keepalive)
        self.write_error = write_error
        self.next_request = next_request
        self.running = running
        self.pause = pause
        self._waiting = waiting if waiting is not None else WaitingConnections()
        self._base = dict(base_environ)
        self._base.update(address_environ(client, server))
        self._messages: deque[Message] = deque()
        # PERF: llhttp calls the compiled form of on_header (gw/edge/_requestfields.c): it
        # keeps a head's plain fields in the list of ``kept.fields`` and hands every other
        # field to on_header itself, which decides as before. Set before the parser, which
        # looks the callbacks up once.
        self._kept: Collector | _NotKept = _NotKept()
        self._take: Callable[[bytes], bool] = _takes_none
        if Collector is not None:
            self._kept = self.on_header = Collector(  # type: ignore[method-assign]
                self.on_header, limits.field_size, limits.fields
            )
        if Callbacks is not None:
            self._compile_callbacks()
        self._parser = httptools.HttpRequestParser(self)
        # Any version digits parse; on_headers_complete decides (1.x served, others refused).
        self._parser.set_dangerous_leniencies(lenient_version=True)
        # The request llhttp is parsing: its callbacks come after on_message_begin has made
        # it. PERF: an attribute read, not a checked accessor (six callbacks a request).
        self._parsing = Message()  # never seen: replaced before llhttp's first callback
        self._eof = False
        self._upgraded = False
        self._rest = b""  # what the client sent after an upgrade request's head
        self._last_request = False  # a request said close: what follows is never parsed

    def _compile_callbacks(self) -> None:
        """Have llhttp call the compiled forms of the callbacks that begin and end a request.

        PERF: they cost about 170 bytecodes and five Python calls a request in Python. The
        compiled forms do the usual request and hand any other to the methods below, which
        decide and refuse as before; they make the compiled ``Message``.
        """
        callbacks = Callbacks(
            self,
            self._messages,
            self._kept,
            self.limits.request_line,
            self.limits.field_size,
            self.limits.fields,
            on_url=self.on_url,
            on_headers_complete=self.on_headers_complete,
            on_message_complete=self.on_message_complete,
        )
        for name in _COMPILED_CALLBACKS:
            setattr(self, name, getattr(callbacks, name))
        self._take = callbacks.take

    # -- llhttp callbacks (the parser runs inside ``_fill``) ----------------------------------

    def on_message_begin(self) -> None:
        message = self._parsing = Message()
        self._messages.append(message)
        self._kept.fields = message.headers

    def on_url(self, url: bytes) -> None:
        message = self._parsing
        message.url += url
        if len(message.url) > self.limits.request_line:
            raise RequestRefused(414, f"request line over {self.limits.request_line} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        """Keep or refuse one field (with the compiled collector: the fields it leaves)."""
        message = self._parsing
        limits = self.limits
        # "Name: value" and its CRLF, as gunicorn counts a field line against its limit.
        if len(name) + len(value) + 4 > limits.field_size:
            raise RequestRefused(431, f"a header field over {limits.field_size} bytes")
        if message.head_done:
            # APPSEC: a trailer field (after a chunked body) is never merged into the header
            # section (RFC 9110 section 6.5.1): trailers are dropped (their bytes count as
            # chunk framing, see check_chunk_framing), and one that would frame, route or
            # authenticate is refused outright, as gunicorn does.
            if name.lower() in _FORBIDDEN_TRAILERS:
                raise RequestRefused(400, f"{name.decode('latin-1')} is not allowed in trailers")
            return
        if len(message.headers) >= limits.fields:
            raise RequestRefused(431, f"more than {limits.fields} header fields")
        # PERF: the length first: no lower-case copy of every other name.
        if len(name) == 17 and name.lower() == b"transfer-encoding":
            check_transfer_coding(value)
        message.headers.append((name, value))

    def on_headers_complete(self) -> None:
        message = self._parsing
        parser = self._parser
        message.method = parser.get_method().decode("ascii")
        message.version = served_version(parser.get_http_version())
        line = len(message.method) + len(message.url) + len(" HTTP/1.1") + 1
        if line > self.limits.request_line:
            raise RequestRefused(414, f"request line over {self.limits.request_line} bytes")
        message.keep_alive = parser.should_keep_alive()
        message.upgrade = parser.should_upgrade()
        if message.version == "1.0" and has_header(message, b"transfer-encoding"):
            # APPSEC: HTTP/1.0 has no chunked coding (RFC 9112 section 6.1); a 1.0 peer in
            # the path could read the same bytes with other boundaries.
            raise RequestRefused(400, "Transfer-Encoding is not allowed in an HTTP/1.0 request")
        if message.upgrade:
            check_upgrade(message)
        message.head_done = True
        self._kept.fields = None  # a trailer field is on_header's

    def on_body(self, body: bytes) -> None:
        message = self._parsing
        message.body_bytes += len(body)
        message.chunks.append(body)

    def on_chunk_header(self) -> None:
        self._parsing.chunk_count += 1

    def on_message_complete(self) -> None:
        message = self._parsing
        message.complete = True
        if not message.keep_alive:
            self._last_request = True

    # -- the connection loop ---------------------------------------------------------------

    def serve(self) -> None:
        """Answer requests until the client leaves, a limit is hit, or the worker stops."""
        served = 0
        try:
            self.sock.settimeout(self.limits.timeout)  # every wait's but a head's (_next_head)
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
            # PERF: the parser, the collector and the compiled callbacks refer back to this
            # object (see gw.upstream.wire.Response.close)
            del self._parser, self._kept
            for name in ("on_header", "_take", *_COMPILED_CALLBACKS):
                self.__dict__.pop(name, None)

    def _next_head(self) -> Message | None:
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
        if not (messages and messages[0].head_done):
            self._waiting.waiting(self)
        while not (messages and messages[0].head_done):
            if self._eof:
                if messages or received:
                    raise RequestRefused(400, "the connection ended inside a request head")
                return None
            try:
                received += self._fill(self._idle_wait)
            except TimeoutError:
                if not (received or messages or self.running()):
                    return None  # the worker is stopping: idle connections go at once
            if received > self._head_most:
                raise RequestRefused(431, "request head too large")
            if time.monotonic() - started > self.limits.keepalive:
                return None  # idle, or too slow with its head: close quietly, like gunicorn
        self._waiting.working(self)
        return messages[0]

    def shed(self) -> None:
        """End this connection while it waits for a head (the worker is at its cap)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # its recv returns at once with EOF

    def _fill(self, timeout: float | None = None) -> int:
        """Read once from the client and parse what came; return the byte count (0 at EOF).

        ``timeout``: wait at most that long instead of the socket's timeout (``limits.timeout``).
        """
        try:
            data = receive(self.sock, CHUNK, timeout)
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
        if parsing.head_done and not parsing.complete:
            parsing.framing_bytes += len(data)
        self._feed(data)
        if parsing.chunk_count:
            check_chunk_framing(parsing)
        return len(data)

    def _feed(self, data: bytes) -> None:
        # PERF: between two requests (llhttp has parsed every byte it was given into complete
        # messages), a read that is the usual request whole is taken without llhttp.
        if self._parsing.complete and self._take(data):
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as ex:
            # What follows the head is not HTTP/1: answer, then close (or relay it, when the
            # answer switched protocols: gw.edge.tunnel).
            self._upgraded = True
            self._rest = data[ex.args[0] :]
        except httptools.HttpParserCallbackError as ex:
            cause = ex.__context__
            if isinstance(cause, RequestRefused):
                raise cause from None
            raise RequestRefused(400, str(ex)) from None
        except httptools.HttpParserError as ex:
            if self._last_request:
                return  # bytes after a request that said close: it is answered all the same
            raise RequestRefused(400, f"malformed request: {ex}") from None

    def _answer(self, message: Message, served: int) -> bool:
        """Run the app for one request; return whether the connection may carry another."""
        environ = build_environ(self._base, message)
        reply = Reply(self.sock, message, self.next_request() and served < self.limits.requests)
        body = Input(self, message)
        environ["wsgi.input"] = body
        if message.upgrade:
            switch = environ[SWITCH] = reply.switch = Switch()
            try:
                self._answer_upgrade(environ, reply, switch)
            finally:
                switch.finish()
            return False
        return self._run(environ, reply, message)

    def _answer_upgrade(self, environ: dict[str, Any], reply: Reply, switch: Switch) -> None:
        """Answer an upgrade request; relay the tunnel the app offered once 101 is written."""
        self._run(environ, reply, None)
        tunnel = switch.tunnel
        if tunnel is not None and reply.switched:
            relay(self.sock, self._rest, tunnel, self.running)

    def _run(self, environ: dict[str, Any], reply: Reply, message: Message | None) -> bool:
        """Run the app and send its answer; return whether the connection may go on."""
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
        if not reply.keep_alive or self._upgraded or message is None:
            return False
        if not message.complete:
            self._linger()  # the app left body bytes unread: never parse them as a request
            return False
        return True

    def read_body(self, message: Message, deadline: float | None = None) -> bytes:
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
