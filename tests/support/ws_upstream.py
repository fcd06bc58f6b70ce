"""A real WebSocket upstream (the ``websockets`` library's sync server) on 127.0.0.1.

It echoes every message, text or binary; ``close`` makes it close the connection (code 1000);
a handshake for a path ending in ``/deny`` is answered 403,
and it records each handshake's headers, each plain HTTP request's, and each connection's end.
"""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve


@dataclass
class WsUpstream:
    server: Server
    thread: threading.Thread
    scheme: str = "http"
    handshakes: list[Headers] = field(default_factory=list)
    plain: list[Headers] = field(default_factory=list)  # requests that did not ask to upgrade
    ended: list[float] = field(default_factory=list)  # when each connection's handler ended

    @property
    def url(self) -> str:
        host, port = self.server.socket.getsockname()[:2]
        return f"{self.scheme}://{host}:{port}"

    def wait_ended(self, count: int, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.ended) >= count:
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=5)


def start_ws_upstream(tls: ssl.SSLContext | None = None) -> WsUpstream:
    holder: dict[str, WsUpstream] = {}

    def handler(conn: ServerConnection) -> None:
        try:
            for message in conn:
                if message == "close":
                    conn.close(1000, "asked to")
                    return
                conn.send(message)
        except ConnectionClosed:
            pass
        finally:
            holder["up"].ended.append(time.monotonic())

    def process_request(conn: ServerConnection, request: Request) -> Response | None:
        up = holder["up"]
        if "upgrade" not in request.headers.get("Connection", "").lower():
            up.plain.append(request.headers)
            return conn.respond(200, "plain\n")
        up.handshakes.append(request.headers)
        if request.path.endswith("/deny"):
            return conn.respond(403, "denied\n")
        return None

    server = serve(
        handler,
        "127.0.0.1",
        0,
        process_request=process_request,
        compression=None,
        ping_interval=None,
        ssl=tls,
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    holder["up"] = WsUpstream(server, thread, "https" if tls else "http")
    thread.start()
    return holder["up"]


def ws_url(http_url: str, path: str) -> str:
    return "ws://" + http_url.split("://", 1)[1] + path


def connect_kwargs(**extra: Any) -> dict[str, Any]:
    """The client's settings: no proxy from the environment, no pings, no compression."""
    return {"proxy": None, "ping_interval": None, "compression": None, "open_timeout": 5, **extra}
