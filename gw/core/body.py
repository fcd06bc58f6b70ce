"""Request bodies streamed to the upstream with the size limit enforced as they flow."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO

from gw.core.headers import chunked_only
from gw.core.request import Request
from gw.errors import (
    BodyTooLarge,
    ClientBodyIncomplete,
    GatewayError,
    InvalidHeader,
    UnsupportedCoding,
)

CHUNK = 64 * 1024


def request_body(
    request: Request, limit: int, min_rate: float | None, grace: float
) -> tuple[LimitedBody | None, int | None]:
    """The body to send and its length (None: chunked, length unknown); None for no body.

    Raises:
        BodyTooLarge: the announced length is over ``limit`` (the stream enforces it too).
        InvalidHeader, UnsupportedCoding: the body's framing is not one gw accepts.
    """
    fields = request.headers.by_name  # PERF: looked up by their lower-case names
    coding = fields.get("transfer-encoding")
    if coding is not None:
        _check_transfer_coding(coding, request.protocol)
        length = None
    else:
        value = fields.get("content-length")
        length = _content_length(value) if value else 0  # PERF: no call for no body
        if length == 0:
            return None, None
        if length > limit:
            raise BodyTooLarge(f"request body of {length} bytes exceeds the limit of {limit}")
    body = LimitedBody(request.body, limit, length)
    if min_rate:
        body.require_rate(min_rate, grace)
    return body, length


def _content_length(value: str) -> int:
    if not value.isdigit():
        raise InvalidHeader("Content-Length must be a non-negative integer")
    return int(value)


def _check_transfer_coding(coding: str, protocol: str) -> None:
    """Accept only a lone ``chunked`` coding, and only from HTTP/1.1 (RFC 9112 section 6.1).

    APPSEC: the gevent worker refuses these before the app runs; this holds for gunicorn's
    own parser too, whatever its version lets through.
    """
    if not chunked_only(coding):
        raise UnsupportedCoding(f"transfer coding {coding[:60]!r} is not supported")
    if protocol == "HTTP/1.0":
        raise InvalidHeader("Transfer-Encoding is not allowed in an HTTP/1.0 request")


class LimitedBody:
    """A file-like view of the client's body that refuses to pass more than ``limit`` bytes.

    Used for both Content-Length bodies (``read``) and chunked uploads (iteration), so the
    limit holds even when the client announced no length. With ``length`` (the validated
    Content-Length, which gw announces upstream) it yields exactly that many bytes or fails.
    """

    def __init__(self, stream: IO[bytes], limit: int, length: int | None = None) -> None:
        self._stream = stream
        self._limit = limit
        self._length = length
        self._pending = b""  # read by ``buffer`` and not yet handed on
        self.received = 0

    def buffer(self, max_bytes: int) -> bytes | None:
        """Read the whole body if it has at most ``max_bytes``; else None (it then streams,
        the bytes already read first)."""
        parts: list[bytes] = []
        have = 0
        while have <= max_bytes:
            data = self.read(CHUNK)
            if not data:
                return b"".join(parts)
            parts.append(data)
            have += len(data)
        self._pending = b"".join(parts)
        return None

    def require_rate(self, min_rate: float, grace: float) -> None:
        """Ask the server for ``min_rate`` bytes/s after ``grace`` seconds (408 below it).

        Warning:
            Only gw's gevent worker (``gw.edge.upload``) can enforce it; gunicorn's own readers
            cannot, and a trickled body there is bounded by its per-read timeout only.
        """
        require = getattr(self._stream, "require_rate", None)
        if require is not None:
            require(min_rate, grace)

    def read(self, size: int = CHUNK) -> bytes:
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        size = size if size and size > 0 else CHUNK
        if self._length is not None:
            # APPSEC: the upstream is told Content-Length: length; never send it more (the
            # extra bytes would be read as another request) nor quietly less (see below).
            size = min(size, self._length - self.received)
            if size == 0:
                return b""
        try:
            data = self._stream.read(size)
        except GatewayError:
            raise  # the server's own verdict (408 for a trickled body)
        except Exception as ex:  # the server's own input errors (client went away)
            raise ClientBodyIncomplete(f"the client stopped sending its body ({ex})") from None
        self.received += len(data)
        if self.received > self._limit:
            raise BodyTooLarge(f"request body exceeds the limit of {self._limit} bytes")
        if not data and self._length is not None:
            # The upstream connection that carried the shorter body is closed by the caller.
            raise ClientBodyIncomplete(
                f"the client sent {self.received} of the {self._length} body bytes it announced"
            )
        return data

    def __iter__(self) -> Iterator[bytes]:
        while data := self.read(CHUNK):
            yield data
