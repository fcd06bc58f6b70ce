"""An in-process transport for ``Gateway``: upstreams that answer over socket pairs.

``FakeTransport.connect`` is a ``gw.upstream.pool.Connector``: each new upstream connection
is one end of a ``socket.socketpair()``, and a thread speaks HTTP/1.1 (h11, an independent
implementation) on the other end. gw's own framing, pooling and response reading run
unchanged; only TCP is gone. Each upstream records what it received.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import h11
from urllib3.connection import HTTPConnection

from gw.upstream.spec import Target


@dataclass
class Received:
    """One request as an upstream received it."""

    method: str
    target: str
    headers: dict[str, str]  # lower-case names; repeated fields joined with ", "
    body: bytes


Answer = tuple[int, list[tuple[str, str]], bytes]
Handler = Callable[[Received], Answer]


def json_answer(payload: object, status: int = 200) -> Answer:
    body = json.dumps(payload).encode()
    return status, [("Content-Type", "application/json")], body


def echo(received: Received) -> Answer:
    return json_answer({"path": received.target, "method": received.method})


@dataclass
class FakeUpstream:
    handler: Handler = echo
    received: list[Received] = field(default_factory=list)
    connections: int = 0


class FakeTransport:
    """Upstreams by ``host:port``; a target nobody registered refuses the connection."""

    def __init__(self) -> None:
        self.upstreams: dict[str, FakeUpstream] = {}
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []

    def add(self, netloc: str, handler: Handler = echo) -> FakeUpstream:
        upstream = FakeUpstream(handler)
        self.upstreams[netloc] = upstream
        return upstream

    def connect(self, target: Target, timeout: float) -> HTTPConnection:
        upstream = self.upstreams.get(target.netloc)
        if upstream is None:
            raise ConnectionRefusedError(f"nothing listens on {target.netloc} (fake transport)")
        upstream.connections += 1
        ours, theirs = socket.socketpair()
        self._sockets += [ours, theirs]
        thread = threading.Thread(target=_serve, args=(theirs, upstream), daemon=True)
        thread.start()
        self._threads.append(thread)
        conn = HTTPConnection(target.host, target.port, timeout=timeout)
        conn.sock = ours
        return conn

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()
        for thread in self._threads:
            thread.join(timeout=2)


def _serve(sock: socket.socket, upstream: FakeUpstream) -> None:
    """Answer requests on ``sock`` until gw closes it."""
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            received = _read_request(sock, conn)
            if received is None:
                return
            upstream.received.append(received)
            status, headers, body = upstream.handler(received)
            headers = [*headers, ("Content-Length", str(len(body)))]
            sock.sendall(conn.send(h11.Response(status_code=status, headers=headers)))
            sock.sendall(conn.send(h11.Data(data=body)) or b"")
            sock.sendall(conn.send(h11.EndOfMessage()) or b"")
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
    except (OSError, h11.ProtocolError):
        return
    finally:
        sock.close()


def _read_request(sock: socket.socket, conn: h11.Connection) -> Received | None:
    request: h11.Request | None = None
    body = b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = sock.recv(65536)
            conn.receive_data(data)
            if not data and request is None:
                return None
            continue
        if isinstance(event, h11.ConnectionClosed):
            return None
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            assert request is not None
            headers: dict[str, str] = {}
            for name, value in request.headers:
                key = name.decode().lower()
                headers[key] = (
                    f"{headers[key]}, {value.decode()}" if key in headers else value.decode()
                )
            return Received(request.method.decode(), request.target.decode(), headers, body)
