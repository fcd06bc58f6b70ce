"""A real JWKS endpoint on 127.0.0.1 that a test can rotate, break and take down.

``start_jwks_server(document)`` serves ``document`` at any path. The test can:

- ``publish(doc)``: replace the key set (rotation);
- ``mode = ...``: ``"ok"``, ``"hang"`` (read the request, never answer until closed),
  ``"slow"`` (answer after ``delay`` seconds), ``"garbage"`` (200 with a body that is not a key
  set), ``"error"`` (HTTP 500), ``"reset"`` (close the connection without answering),
  ``"redirect"`` (302 to ``redirect_to``, by default this server's ``/moved``);
- ``go_down()`` / ``come_back()``: stop listening (connections are refused) and listen again
  on the same port;
- read ``fetches`` (requests received, any mode) and ``paths`` (what each asked for).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class JwksServer:
    document: dict[str, Any]
    port: int = 0
    mode: str = "ok"
    delay: float = 0.0
    redirect_to: str | None = None
    paths: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    released: threading.Event = field(default_factory=threading.Event)
    connections: set[socket.socket] = field(default_factory=set)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/.well-known/jwks.json"

    @property
    def fetches(self) -> int:
        with self.lock:
            return len(self.paths)

    def publish(self, document: dict[str, Any]) -> None:
        """Serve ``document`` from now on."""
        with self.lock:
            self.document = document

    def go_down(self) -> None:
        """Stop listening and drop open connections: connecting is refused until ``come_back``."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self.lock:
            open_connections, self.connections = self.connections, set()
        for connection in open_connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def come_back(self) -> None:
        """Listen again on the same port."""
        self._listen(self.port)

    def close(self) -> None:
        self.released.set()
        self.go_down()

    def _listen(self, port: int) -> None:
        handler = type("Handler", (_Handler,), {"jwks": self})
        server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        server.daemon_threads = True
        self._server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # keep-alive: head and body are two writes
    jwks: JwksServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        with self.jwks.lock:
            self.jwks.connections.add(self.connection)

    def finish(self) -> None:
        with self.jwks.lock:
            self.jwks.connections.discard(self.connection)
        super().finish()

    def do_GET(self) -> None:
        server = self.jwks
        with server.lock:
            server.paths.append(self.path)
            document, mode = server.document, server.mode
        if mode == "hang":
            server.released.wait(30)
            self.close_connection = True
            return
        if mode == "reset":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if mode == "slow":
            server.released.wait(server.delay)
        self._answer(mode, document)

    def _answer(self, mode: str, document: dict[str, Any]) -> None:
        if mode == "garbage":
            self._send(200, b'{"keys": "surely not"}', "application/json")
        elif mode == "error":
            self._send(500, b"internal error", "text/plain")
        elif mode == "redirect" and self.path != "/moved":
            target = self.jwks.redirect_to or f"http://127.0.0.1:{self.jwks.port}/moved"
            self._send(302, b"", "text/plain", [("Location", target)])
        else:
            self._send(200, json.dumps(document).encode(), "application/json")

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra or []:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def start_jwks_server(document: dict[str, Any]) -> JwksServer:
    """Start serving ``document`` on an ephemeral loopback port."""
    server = JwksServer(document)
    server._listen(0)
    return server
