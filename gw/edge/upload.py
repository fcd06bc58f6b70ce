"""``wsgi.input`` for gw's server: the request body read on demand, 100-continue, a minimum rate."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from gw.edge.request import Message

if TYPE_CHECKING:
    from gw.edge.connection import Connection


class Input:
    """``wsgi.input``: the request body as the client sends it, read on demand."""

    def __init__(self, conn: Connection, message: Message) -> None:
        self._conn = conn
        self._message = message
        self._buffer = b""
        self._min_rate = 0.0
        self._started = 0.0
        self._received = 0
        # HTTP/1.0 has no 100 (Continue): a 1.0 client's Expect is ignored (RFC 9110 10.1.1).
        # PERF: the headers are searched only for a body still to come (never for a GET).
        self._continue = (
            not message.complete and message.version != "1.0" and _expects_continue(message)
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


def _expects_continue(message: Message) -> bool:
    expect = next((v for n, v in message.headers if n.lower() == b"expect"), b"")
    return expect.lower() == b"100-continue"
