"""A real JSON upstream on 127.0.0.1 that answers per path, slowly or badly on cue, and
records what it received and how many connections the gateway closed."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from gw.health.balancer import for_upstream
from gw.upstream.client import UpstreamClient
from gw.upstream.spec import Target, UpstreamSpec


@dataclass
class Reply:
    """What the upstream answers: a JSON value (or raw bytes), after an optional delay."""

    body: Any = None
    status: int = 200
    delay: float = 0.0
    content_type: str = "application/json"


@dataclass
class Seen:
    target: str
    headers: dict[str, str]
    client_port: int


@dataclass
class JsonUpstream:
    server: ThreadingHTTPServer
    replies: dict[str, Reply]
    seen: list[Seen] = field(default_factory=list)
    closed_connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def client(self, name: str = "up", base_path: str = "", **spec: Any) -> UpstreamClient:
        settings = {"connect_timeout": 1.0, "read_timeout": 5.0, "pool_size": 4}
        settings.update(spec)
        target = Target("http", "127.0.0.1", self.port, base_path)
        upstream = UpstreamSpec(
            name,
            (target,),
            settings["connect_timeout"],
            settings["read_timeout"],
            settings["pool_size"],
            settings.get("preserve_host", False),
        )
        return UpstreamClient(upstream, for_upstream(upstream))

    def requests(self) -> list[Seen]:
        with self.lock:
            return list(self.seen)

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes
    upstream: JsonUpstream

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except ConnectionError:
            pass  # the gateway closed (or reset) an abandoned connection
        finally:
            with self.upstream.lock:
                self.upstream.closed_connections += 1

    def do_GET(self) -> None:
        up = self.upstream
        with up.lock:
            up.seen.append(Seen(self.path, dict(self.headers.items()), self.client_address[1]))
        reply = up.replies.get(self.path.split("?")[0], Reply({"target": self.path}))
        if reply.delay and up.stop.wait(reply.delay):
            self.close_connection = True
            return
        body = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def start_json_upstream(replies: dict[str, Reply] | None = None) -> JsonUpstream:
    handler = type("Handler", (_Handler,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    upstream = JsonUpstream(server, replies or {})
    handler.upstream = upstream
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return upstream
