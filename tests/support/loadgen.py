"""Load for soak tests: a fast keep-alive upstream and a pipelining raw-socket client.

Both are deliberately small and cheap per request, so that on a 2-core box most of the CPU
goes to the gateway under test:

- ``FastUpstream`` answers every request head with one fixed JSON body, keeps connections
  alive, handles pipelined heads, and counts what it answered (requests without a body
  only; that is all a soak sends);
- ``hammer(port, requests, ...)`` sends the requests on a few kept-alive connections, in
  pipelined batches, and tallies the answers by status (and cache hits).
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

BODY = b'{"id":"usr_8a3f","name":"Alice Chen","items":[1,2,3]}'
_ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(BODY)).encode()
    + b"\r\n\r\n"
    + BODY
)


@dataclass
class FastUpstream:
    """A loopback upstream answering ``200 BODY`` to every head, on kept-alive connections."""

    sock: socket.socket
    answered: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self) -> None:
        self.stopping.set()
        self.sock.close()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        buffer = b""
        with connection:
            while not self.stopping.is_set():
                try:
                    chunk = connection.recv(65536)
                except OSError:
                    return
                if not chunk:
                    return
                buffer += chunk
                heads = buffer.count(b"\r\n\r\n")
                if heads:
                    buffer = buffer[buffer.rfind(b"\r\n\r\n") + 4 :]
                    with self.lock:
                        self.answered += heads
                    connection.sendall(_ANSWER * heads)


def start_fast_upstream() -> FastUpstream:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    upstream = FastUpstream(sock)
    threading.Thread(target=upstream._accept, daemon=True).start()
    return upstream


@dataclass
class Tally:
    """What came back: answers per status, cache hits, and failures of the client itself."""

    statuses: Counter[int] = field(default_factory=Counter)
    cache_hits: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    def add(self, other: Tally) -> None:
        self.statuses.update(other.statuses)
        self.cache_hits += other.cache_hits
        self.errors += other.errors


def hammer(
    port: int,
    requests: Sequence[bytes],
    total: int,
    *,
    connections: int = 3,
    depth: int = 32,
    timeout: float = 600.0,
) -> Tally:
    """Send ``total`` requests, cycling through ``requests``, on kept-alive connections.

    Each connection writes ``depth`` requests at once and reads their answers before the next
    batch. The loop is bounded by ``total`` and by ``timeout`` seconds.
    """
    tally = Tally()
    lock = threading.Lock()
    deadline = time.monotonic() + timeout
    share = [
        total // connections + (1 if i < total % connections else 0) for i in range(connections)
    ]

    def run(count: int, offset: int) -> None:
        mine = _client(port, requests, count, offset, depth, deadline)
        with lock:
            tally.add(mine)

    threads = [
        threading.Thread(target=run, args=(count, i * 7), daemon=True)
        for i, count in enumerate(share)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 5)
    return tally


def _client(
    port: int, requests: Sequence[bytes], count: int, offset: int, depth: int, deadline: float
) -> Tally:
    """Send ``count`` requests on one connection at a time (a new one when the gateway closes
    it, as it does after its per-connection request cap); resend what a close left unanswered."""
    tally = Tally()
    reader: _Reader | None = None
    done = 0
    while done < count and time.monotonic() < deadline and len(tally.errors) <= 100:
        size = min(depth, count - done)
        batch = [requests[(offset + done + i) % len(requests)] for i in range(size)]
        try:
            reader = reader or _Reader(socket.create_connection(("127.0.0.1", port), timeout=30))
            reader.sock.sendall(b"".join(batch))
            done += _read_answers(reader, size, tally)
        except (OSError, ValueError) as ex:
            tally.errors.append(f"{type(ex).__name__}: {ex}")
            done += size  # counted as sent; the error fails the soak
        if reader is not None and (reader.closing or tally.errors):
            reader.sock.close()
            reader = None
    if reader is not None:
        reader.sock.close()
    return tally


def _read_answers(reader: _Reader, expected: int, tally: Tally) -> int:
    """Read up to ``expected`` answers, stopping after one that closes; return how many."""
    for answered in range(1, expected + 1):
        status, head = reader.response()
        tally.statuses[status] += 1
        tally.cache_hits += b"\r\nx-cache: hit" in head.lower()
        if reader.closing:
            return answered
    return expected


class _Reader:
    """Read HTTP/1.1 responses (Content-Length or chunked) from one socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.closing = False  # the last answer said Connection: close

    def response(self) -> tuple[int, bytes]:
        """Return (status, head); the body is read and dropped."""
        head = self._until(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        if b"\r\ntransfer-encoding: chunked" in lower:
            self._chunks()
        else:
            at = lower.find(b"\r\ncontent-length:")
            length = int(lower[at + 17 : lower.find(b"\r\n", at + 2)]) if at >= 0 else 0
            self._take(length)
        self.closing = b"\r\nconnection: close" in lower
        return status, head

    def _chunks(self) -> None:
        while True:
            size = int(self._until(b"\r\n").split(b";")[0], 16)
            if size == 0:
                self._until(b"\r\n")  # no trailers are expected
                return
            self._take(size + 2)

    def _until(self, marker: bytes) -> bytes:
        while (at := self.buffer.find(marker)) < 0:
            self._fill()
        line, self.buffer = self.buffer[:at], self.buffer[at + len(marker) :]
        return line

    def _take(self, size: int) -> None:
        while len(self.buffer) < size:
            self._fill()
        self.buffer = self.buffer[size:]

    def _fill(self) -> None:
        chunk = self.sock.recv(262144)
        if not chunk:
            raise ConnectionError("the gateway closed the connection")
        self.buffer += chunk
