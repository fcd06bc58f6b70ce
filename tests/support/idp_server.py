"""A real OAuth 2.0 / OpenID Connect provider on 127.0.0.1: discovery, keys, introspection.

``start_idp_server(keys)`` serves:

- ``GET /.well-known/openid-configuration``: ``{"issuer": <issuer>, "jwks_uri": <url>/jwks,
  "introspection_endpoint": <url>/introspect}`` (``issuer`` defaults to the server's own
  base URL; set ``discovery_issuer`` to announce another one);
- ``GET /jwks``: the key set of ``keys``;
- ``POST /introspect``: RFC 7662. The client must authenticate as ``client_id`` /
  ``client_secret`` (HTTP Basic, or in the form for ``client_secret_post``), else 401.
  ``tokens`` maps an active token to the members of its answer (``active: true`` added);
  any other token is ``{"active": false}``.

The test can set ``mode`` (``"ok"``, ``"error"`` (500), ``"garbage"`` (200, not JSON),
``"active_string"`` (``"active": "true"``), ``"hang"`` (never answers)) or ``delay``, call
``go_down()`` / ``come_back()``, and read ``introspections`` (calls answered or refused),
``forms`` (each introspection's form), ``authorizations`` and ``paths``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote_plus

from tests.support.tokens import SigningKey, jwks

CLIENT_ID = "gw"
CLIENT_SECRET = "introspection-secret-Zq8!"


@dataclass
class IdpServer:
    document: dict[str, Any]
    tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    client_id: str = CLIENT_ID
    client_secret: str = CLIENT_SECRET
    discovery_issuer: str | None = None
    jwks_uri: str | None = None
    port: int = 0
    mode: str = "ok"
    delay: float = 0.0  # seconds before each introspection answer
    paths: list[str] = field(default_factory=list)
    forms: list[dict[str, str]] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    released: threading.Event = field(default_factory=threading.Event)
    connections: set[socket.socket] = field(default_factory=set)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def issuer(self) -> str:
        return self.url

    @property
    def introspect_url(self) -> str:
        return self.url + "/introspect"

    @property
    def introspections(self) -> int:
        with self.lock:
            return len(self.forms)

    def fetches(self, path: str) -> int:
        with self.lock:
            return self.paths.count(path)

    def activate(self, token: str, **members: Any) -> None:
        """Answer ``{"active": true, **members}`` for ``token`` from now on."""
        with self.lock:
            self.tokens[token] = members

    def revoke(self, token: str) -> None:
        with self.lock:
            self.tokens.pop(token, None)

    def go_down(self) -> None:
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
        self._listen(self.port)

    def close(self) -> None:
        self.released.set()
        self.go_down()

    def _listen(self, port: int) -> None:
        handler = type("Handler", (_Handler,), {"idp": self})
        server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        server.daemon_threads = True
        self._server = server
        self.port = int(server.server_address[1])
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # keep-alive: head and body are two writes
    idp: IdpServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        with self.idp.lock:
            self.idp.connections.add(self.connection)

    def finish(self) -> None:
        with self.idp.lock:
            self.idp.connections.discard(self.connection)
        super().finish()

    def do_GET(self) -> None:
        idp = self.idp
        with idp.lock:
            idp.paths.append(self.path)
        if self.path == "/.well-known/openid-configuration":
            self._json(
                200,
                {
                    "issuer": idp.discovery_issuer or idp.issuer,
                    "jwks_uri": idp.jwks_uri or idp.url + "/jwks",
                    "introspection_endpoint": idp.introspect_url,
                },
            )
        elif self.path == "/jwks":
            self._json(200, idp.document)
        else:
            self._json(404, {"error": "not_found"})

    def do_POST(self) -> None:
        idp = self.idp
        length = int(self.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        with idp.lock:
            idp.paths.append(self.path)
            idp.forms.append(form)
            idp.authorizations.append(self.headers.get("Authorization"))
            mode, members = idp.mode, idp.tokens.get(form.get("token", ""))
        if idp.delay:
            idp.released.wait(idp.delay)
        if self.path != "/introspect":
            self._json(404, {"error": "not_found"})
        elif mode == "hang":
            idp.released.wait(30)
            self.close_connection = True
        elif not self._client_ok(form):
            self._json(401, {"error": "invalid_client"})
        elif mode == "error":
            self._send(500, b"internal error", "text/plain")
        elif mode == "garbage":
            self._send(200, b"<html>sign in</html>", "text/html")
        elif mode == "active_string":
            self._json(200, {"active": "true", "sub": "mallory"})
        else:
            self._json(
                200, {"active": True, **members} if members is not None else {"active": False}
            )

    def _client_ok(self, form: dict[str, str]) -> bool:
        idp = self.idp
        header = self.headers.get("Authorization") or ""
        if header.startswith("Basic "):
            raw = base64.b64decode(header[6:]).decode()
            user, _, password = raw.partition(":")
            pair = (unquote_plus(user), unquote_plus(password))
        else:
            pair = (form.get("client_id", ""), form.get("client_secret", ""))
        return pair == (idp.client_id, idp.client_secret)

    def _json(self, status: int, value: Any) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def start_idp_server(*keys: SigningKey) -> IdpServer:
    """Start a provider publishing ``keys`` on an ephemeral loopback port."""
    server = IdpServer(jwks(*keys))
    server._listen(0)
    return server
