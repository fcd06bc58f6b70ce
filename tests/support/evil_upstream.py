"""A raw-socket upstream on 127.0.0.1 that answers each request with scripted bytes.

Unlike ``tests.support.upstream`` nothing here is HTTP-aware on the way out: a script is a list
of steps, each either bytes sent as they are (one ``sendall``, so usually one TCP segment) or a
float, seconds to wait before the next step. Requests are routed by path:

- ``/case/<name>``: the script registered under ``<name>``;
- ``/ok/<token>``: a well-formed ``200`` whose body is ``<token>`` (the "next client").

After a script the connection stays open and serves further requests, exactly as a confused
but kept-alive upstream would; a script ending in ``CLOSE`` closes it instead. Every request is
recorded with the serial number of the TCP connection it arrived on, so a test can tell a
fresh connection from a reused one, and with the client certificate's name under mutual TLS;
the most scripts ever played at once is kept too. With a server TLS context it speaks HTTPS,
each step one TLS record.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

CLOSE = "close"
Step = bytes | float | str
MAX_REQUEST_HEAD = 64 * 1024
IDLE_SECONDS = 15.0  # a connection silent this long is closed (bounds every thread)


@dataclass(frozen=True)
class Seen:
    connection: int  # serial number of the TCP connection, from 1
    method: str
    target: str
    client: str | None = None  # the common name of the client's TLS certificate, if any


def ok_answer(token: str) -> bytes:
    body = token.encode()
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


@dataclass
class EvilUpstream:
    scripts: Mapping[str, Sequence[Step]]
    tls: ssl.SSLContext | None = None  # serve HTTPS with this server context
    listener: socket.socket = field(init=False)
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)
    _connections: int = 0
    answering: int = 0  # scripts being played right now
    most_answering: int = 0  # the most ever played at once

    def __post_init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        threading.Thread(target=self._accept_loop, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def requests_for(self, target: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.target == target]

    def close(self) -> None:
        self.stopping.set()
        self.listener.close()

    def _accept_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self.lock:
                self._connections += 1
                serial = self._connections
            threading.Thread(target=self._serve, args=(conn, serial), daemon=True).start()

    def _serve(self, conn: socket.socket, serial: int) -> None:
        conn.settimeout(IDLE_SECONDS)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client = None
        if self.tls is not None:
            try:
                conn = self.tls.wrap_socket(conn, server_side=True)
            except OSError:
                conn.close()
                return
            client = _common_name(cast(ssl.SSLSocket, conn).getpeercert())
        buffered = b""
        with conn:
            while not self.stopping.is_set():
                try:
                    head, buffered = _read_head(conn, buffered)
                    if head is not None:
                        buffered = _skip_body(conn, head, buffered)
                except OSError:
                    return
                if head is None:
                    return
                method, target = _request_line(head)
                with self.lock:
                    self.seen.append(Seen(serial, method, target, client))
                    self.answering += 1
                    self.most_answering = max(self.most_answering, self.answering)
                try:
                    if not self._answer(conn, target):
                        return
                finally:
                    with self.lock:
                        self.answering -= 1

    def _answer(self, conn: socket.socket, target: str) -> bool:
        """Play the script for ``target``; return whether the connection stays open."""
        if target.startswith("/ok/"):
            steps: Sequence[Step] = [ok_answer(target[len("/ok/") :])]
        else:
            steps = self.scripts[target.removeprefix("/case/")]
        try:
            for step in steps:
                if step == CLOSE:
                    return False
                if isinstance(step, float):
                    time.sleep(step)
                elif isinstance(step, bytes):
                    conn.sendall(step)
        except OSError:
            return False
        return True


def _common_name(cert: Any) -> str | None:
    """The subject CN of a peer certificate as ``getpeercert()`` gives it, or None."""
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def _read_head(conn: socket.socket, buffered: bytes) -> tuple[bytes | None, bytes]:
    """Read one request head; return it and the bytes read after it."""
    while b"\r\n\r\n" not in buffered:
        if len(buffered) > MAX_REQUEST_HEAD:
            return None, b""
        data = conn.recv(65536)
        if not data:
            return None, b""
        buffered += data
    head, _, rest = buffered.partition(b"\r\n\r\n")
    return head, rest


def _skip_body(conn: socket.socket, head: bytes, buffered: bytes) -> bytes:
    """Read past a Content-Length body (the gateway sends bodies with a length)."""
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(buffered) < length:
        data = conn.recv(65536)
        if not data:
            raise ConnectionError("the body was cut off")
        buffered += data
    return buffered[length:]


def _request_line(head: bytes) -> tuple[str, str]:
    method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
    return method, target


def start_evil_upstream(
    scripts: Mapping[str, Sequence[Step]], tls: ssl.SSLContext | None = None
) -> EvilUpstream:
    """Start a scripted raw-socket upstream on an ephemeral loopback port (HTTPS with ``tls``)."""
    return EvilUpstream(scripts, tls)
