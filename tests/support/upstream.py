"""A real HTTP upstream on 127.0.0.1 that records what it received and can misbehave on cue.

Paths containing a ``__`` keyword trigger a behaviour (anywhere in the path, so they survive
prefix rewrites):

- ``__hang``: accept, read the request, never answer (until the server stops);
- ``__close``: close the connection without answering;
- ``__garbage``: answer with bytes that are not HTTP;
- ``__truncate``: announce 100000 bytes, send 10, close;
- ``__truncate_chunked``: send one chunk and close without the terminating chunk;
- ``__cookies``: two separate Set-Cookie headers;
- ``__redirect``: 302 to /elsewhere;
- ``__xframe``: answers with its own ``X-Frame-Options: SAMEORIGIN``;
- ``__gzip``: a gzip body with Content-Encoding: gzip;
- ``__bytes/N``: N bytes streamed (chunked), N may be large;
- ``__status/N``: an empty answer with status N;
- ``__early``: answer at once, then read (and drain) the body its framing announces, as
  servers that refuse or route before reading do; the record is made after the drain;
- anything else: 200 with a JSON echo of method, target, headers, body length and sha256.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body_len: int
    body_sha256: str

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        return values[0] if values else None

    def header_names(self) -> set[str]:
        return {n.lower() for n, _ in self.headers}


@dataclass
class Upstream:
    server: ThreadingHTTPServer
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop_event: threading.Event = field(default_factory=threading.Event)
    # When set, every request is answered with this status and these headers (a failing target).
    force_status: int | None = None
    force_headers: list[tuple[str, str]] = field(default_factory=list)
    delay: float = 0.0  # seconds to wait before answering anything
    killed: bool = False  # set by kill(): requests read from now on are never answered
    handlers: set[_Handler] = field(default_factory=set)  # one per open connection

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        scheme = "https" if isinstance(self.server, _QuietServer) and self.server.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def count(self) -> int:
        with self.lock:
            return len(self.received)

    def last(self) -> Received:
        with self.lock:
            return self.received[-1]

    def close(self) -> None:
        """Stop accepting; connections already open stay served (a graceful stop)."""
        self.stop_event.set()
        self.server.shutdown()
        self.server.server_close()

    def kill(self) -> None:
        """Die as a killed process does: new connections are refused (or reset, when they were
        still in the listen backlog), open ones close, and a request read but not yet answered
        is never answered (nor recorded). No answer is cut in the middle: each connection is
        closed between answers, so what a client sees depends only on the gateway."""
        self.killed = True
        self.close()
        with self.lock:
            handlers = list(self.handlers)
        for handler in handlers:
            with handler.answering, contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # keep-alive: head and body are two writes
    upstream: Upstream

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.answering = threading.Lock()  # held while a request is answered (see kill)
        with self.upstream.lock:
            self.upstream.handlers.add(self)

    def finish(self) -> None:
        with self.upstream.lock:
            self.upstream.handlers.discard(self)
        super().finish()

    def _hash_body(self) -> tuple[int, str]:
        digest = hashlib.sha256()
        total = 0
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                remaining = size
                while remaining:
                    block = self.rfile.read(min(remaining, 1 << 20))
                    if not block:
                        raise ConnectionError("client went away mid-chunk")
                    digest.update(block)
                    remaining -= len(block)
                    total += len(block)
                self.rfile.readline()
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining:
                block = self.rfile.read(min(remaining, 1 << 20))
                if not block:
                    raise ConnectionError("client went away mid-body")
                digest.update(block)
                remaining -= len(block)
                total += len(block)
        return total, digest.hexdigest()

    def _serve(self) -> None:
        with self.answering:
            if self.upstream.killed:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self._answer()

    def _answer(self) -> None:
        if "__early" in self.path:
            self._send(200, b"early", [])
            self.wfile.flush()
        length, sha = self._hash_body()
        record = Received(self.command, self.path, list(self.headers.items()), length, sha)
        with self.upstream.lock:
            self.upstream.received.append(record)
        self._behave(record)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve
    do_TRACE = do_CONNECT = _serve  # reach it only through a route that names them

    def _behave(self, record: Received) -> None:
        path = record.target.split("?")[0]
        if "__early" in path:
            return  # answered before the body was read
        if self.upstream.delay:
            self.upstream.stop_event.wait(self.upstream.delay)
        if self.upstream.force_status is not None:
            self._send(self.upstream.force_status, b"forced", self.upstream.force_headers)
            return
        if "__hang" in path:
            self.upstream.stop_event.wait(30)
            self.close_connection = True
            return
        if "__close" in path:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if "__garbage" in path:
            self.wfile.write(b"this is not http at all\r\n\r\n")
            self.close_connection = True
            return
        if "__truncate_chunked" in path:
            self.wfile.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n"
            )
            self.wfile.flush()
            self.close_connection = True
            return
        if "__truncate" in path:
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n0123456789")
            self.wfile.flush()
            self.close_connection = True
            return
        if "__bytes/" in path:
            self._stream_bytes(int(path.split("__bytes/")[1].split("/")[0]))
            return
        if "__status/" in path:
            self._send(int(path.split("__status/")[1].split("/")[0]), b"", [])
            return
        if "__cookies" in path:
            self._send(200, b"ok", [("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2; Path=/")])
            return
        if "__nostore" in path:
            self._send(200, b"fresh", [("Cache-Control", "no-store")])
            return
        if "__xframe" in path:
            self._send(200, b"framed", [("X-Frame-Options", "SAMEORIGIN")])
            return
        if "__redirect" in path:
            self._send(302, b"", [("Location", "/elsewhere")])
            return
        if "__gzip" in path:
            body = gzip.compress(b'{"compressed": true}' * 50)
            self._send(
                200, body, [("Content-Encoding", "gzip"), ("Content-Type", "application/json")]
            )
            return
        echo = {
            "method": record.method,
            "target": record.target,
            "headers": record.headers,
            "body_len": record.body_len,
            "body_sha256": record.body_sha256,
        }
        self._send(200, json.dumps(echo).encode(), [("Content-Type", "application/json")])

    def _send(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if status not in (204, 304) and status >= 200:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _stream_bytes(self, total: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        block = b"x" * (1 << 20)
        remaining = total
        while remaining:
            piece = block[: min(remaining, len(block))]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            remaining -= len(piece)
        self.wfile.write(b"0\r\n\r\n")


class _QuietServer(ThreadingHTTPServer):
    tls: ssl.SSLContext | None = None  # serve HTTPS with this server context

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, address = super().get_request()
        if self.tls is not None:  # the handshake happens in the handler's thread
            conn = self.tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        return conn, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that go away mid-body (the tests make them) are not errors here


def start_upstream(tls: ssl.SSLContext | None = None) -> Upstream:
    """Start a recording upstream on an ephemeral loopback port (HTTPS with ``tls``)."""
    handler = type("Handler", (_Handler,), {})
    server = _QuietServer(("127.0.0.1", 0), handler)
    server.tls = tls
    server.daemon_threads = True
    upstream = Upstream(server)
    handler.upstream = upstream
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return upstream


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
