"""The request as llhttp reports it, the per-connection limits, and the rules that refuse one.

Strict parsing, in the terms of RFC 9112: llhttp's default (non-lenient) mode refuses obsolete
line folding, bare CR or LF, a Content-Length together with Transfer-Encoding, duplicate or
invalid Content-Length, a Transfer-Encoding other than a final ``chunked``, and invalid name or
value characters. The rules here refuse what llhttp lets through: HTTP versions gw does not
speak, a transfer coding other than a lone ``chunked``, a body on an upgrade, and chunk framing
out of proportion to the data. ``gw.edge.connection`` applies them as the parser reports each
part of a request.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

from gw.core.headers import chunked_only

CHUNK = 64 * 1024
# APPSEC: chunk framing (sizes, extensions, CRLFs) allowed beyond the data, per chunk and in
# all, before a request is refused; Go's net/http chunked reader uses the same 16-byte rule.
# Extensions are never forwarded, so without a bound they would be free, unlimited input.
_FRAMING_PER_CHUNK = 16
_FRAMING_SLACK = CHUNK + 16 * 1024


class Limits(NamedTuple):
    """Per-connection limits, from gunicorn's settings of the same names."""

    request_line: int = 8190
    fields: int = 100
    field_size: int = 8190
    keepalive: float = 5.0  # seconds to wait for (the whole head of) the next request
    timeout: float = 30.0  # seconds one body read or write may block
    requests: int = 200  # requests per connection before "Connection: close" (rotation)


class RequestRefused(Exception):
    """A request that cannot be parsed or exceeds a limit; answered, then the connection ends."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ClientGone(Exception):
    """The client closed or reset the connection, or stopped sending in time."""


class Message:
    """One request as llhttp reports it: the head, then body pieces as they are parsed.

    PERF: where gw/edge/_requestfields.c is built, llhttp's compiled callbacks make its C form
    (``gw.edge._requestfields.Message``, the same attributes at a fraction of the cost); this
    class stays the fallback, and the one the Python callbacks make.
    """

    __slots__ = (
        "body_bytes",
        "chunk_count",
        "chunks",
        "complete",
        "framing_bytes",
        "head_done",
        "headers",
        "keep_alive",
        "method",
        "upgrade",
        "url",
        "version",
    )

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.chunks: deque[bytes] = deque()
        self.complete = False
        self.keep_alive = False
        self.method = "GET"
        self.version = "1.1"
        self.upgrade = False
        self.body_bytes = 0  # body bytes parsed so far
        self.chunk_count = 0
        self.framing_bytes = 0  # bytes read while in the body: data and chunk framing


def served_version(version: str) -> str:
    """Return the version answered: 1.0, or 1.1 for any later 1.x (RFC 9110 section 2.5).

    Raises:
        RequestRefused: 505 for HTTP/2 and later (gw speaks HTTP/1.1 only), 400 for HTTP/0.9.
    """
    if version == "1.1" or version == "1.0":
        return version
    if version.startswith("1."):
        return "1.1"
    if version.startswith("0."):
        raise RequestRefused(400, "HTTP/0.9 requests are not served")
    raise RequestRefused(505, f"HTTP/{version} is not supported: gw speaks HTTP/1.1")


def check_transfer_coding(value: bytes) -> None:
    """Refuse any transfer coding but a lone ``chunked`` (RFC 9112 section 6.1: 501)."""
    coding = value.decode("latin-1")
    if not chunked_only(coding):
        raise RequestRefused(
            501, f"transfer coding {coding[:60]!r} is not supported (only chunked)"
        )


def check_upgrade(message: Message) -> None:
    """Refuse what llhttp cannot frame: an Upgrade or CONNECT request with a body.

    APPSEC: for both, llhttp skips the body and hands the rest of the stream over as another
    protocol; gw does not switch protocols, so it would forward the request without the body
    its Content-Length announces, and the upstream would take the next bytes as that body.
    Without a body the request is answered (CONNECT: 405 unless a route names it) and the
    connection closed.
    """
    if has_header(message, b"transfer-encoding") or any(
        name.lower() == b"content-length" and value.strip() != b"0"
        for name, value in message.headers
    ):
        raise RequestRefused(400, "a request that asks for a protocol upgrade must have no body")


def check_chunk_framing(message: Message) -> None:
    framing = message.framing_bytes - message.body_bytes
    if framing > _FRAMING_PER_CHUNK * message.chunk_count + _FRAMING_SLACK:
        raise RequestRefused(400, "too many bytes of chunk framing (extensions) for the data")


def has_header(message: Message, name: bytes) -> bool:
    return any(n.lower() == name for n, _ in message.headers)
