"""gzip compression of responses for clients that accept it.

A response is compressed when all of these hold:

- the client accepts gzip: ``Accept-Encoding`` lists ``gzip`` (or ``x-gzip``, or ``*``) with a
  q-value above 0 and not below an explicit ``identity`` q-value; no header means no gzip;
- the method is not HEAD and the status has a body and is not partial (no 1xx, 204, 206, 304);
- the upstream did not set ``Content-Encoding`` or ``Content-Range``, nor
  ``Cache-Control: no-transform``;
- the media type is compressible (text, JSON, JavaScript, XML, SVG, ... as configured; never
  ``text/event-stream``, images, audio, video, archives or ``application/octet-stream``);
- the body is at least ``min_bytes`` (1024) long; a body of unknown length counts as large.

A response that passes every test but the client's is still marked ``Vary: Accept-Encoding``
(merged into an existing ``Vary``), so caches keep the two versions apart.

A compressed body of known length up to ``buffer_bytes`` (1 MiB) is compressed whole and gets
a ``Content-Length`` (and is sent as it was if gzip would not make it smaller); a longer one, or
one of unknown length, is streamed without ``Content-Length``, flushed per upstream chunk. A
strong ``ETag`` becomes weak, and ``Accept-Ranges`` is dropped.

Standard library only.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, Sequence

from gw.shaping.settings import CompressionSettings

Headers = list[tuple[str, str]]

_NO_BODY = frozenset({204, 206, 304})
_NEVER = frozenset({"text/event-stream"})  # a stream of events must not wait in a compressor
_DIGESTS = frozenset({"content-md5", "digest", "content-digest", "repr-digest"})
_GZIP_NAMES = ("gzip", "x-gzip")
_GZIP_WBITS = 31  # zlib's gzip container


def parse_accept_encoding(header: str | None) -> dict[str, float]:
    """Return ``{coding: q}`` (lower-case codings); a malformed q-value reads as 0 (refused).

    A coding listed twice keeps its lowest q-value, so a refusal is never overridden.
    """
    codings: dict[str, float] = {}
    for element in (header or "").split(","):
        coding, *params = element.split(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        quality = _quality(params)
        codings[coding] = min(quality, codings.get(coding, quality))
    return codings


def _quality(params: list[str]) -> float:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                quality = float(value.strip())
            except ValueError:
                return 0.0
            return quality if 0.0 <= quality <= 1.0 else 0.0
    return 1.0


def accepts_gzip(header: str | None) -> bool:
    """Return whether a client's ``Accept-Encoding`` allows (and does not disfavour) gzip."""
    codings = parse_accept_encoding(header)
    quality = next((codings[name] for name in _GZIP_NAMES if name in codings), None)
    if quality is None:
        quality = codings.get("*", 0.0)
    return quality > 0.0 and quality >= codings.get("identity", 0.0)


class Compressor:
    """Decide on and apply gzip; built once from the ``compression:`` settings."""

    def __init__(self, settings: CompressionSettings | None = None) -> None:
        settings = settings or CompressionSettings()
        self.enabled = settings.enabled
        self.min_bytes = settings.min_bytes
        self.level = settings.level
        self.buffer_bytes = settings.buffer_bytes
        self._exact = frozenset(t for t in settings.types if "*" not in t)
        self._wild = tuple(tuple(t.split("*", 1)) for t in settings.types if "*" in t)

    def compressible(self, content_type: str | None) -> bool:
        """Return whether a media type is worth compressing."""
        media = (content_type or "").split(";", 1)[0].strip().lower()
        if not media or media in _NEVER:
            return False
        if media in self._exact:
            return True
        return any(
            media.startswith(head) and media.endswith(tail) and len(media) > len(head + tail)
            for head, tail in self._wild
        )

    def eligible(self, status: int, response_headers: Sequence[tuple[str, str]]) -> bool:
        """Return whether the response could be compressed for some client (so it varies)."""
        if not self.enabled or status < 200 or status in _NO_BODY:
            return False
        found = _index(response_headers)
        encoding = found.get("content-encoding", "").strip().lower()
        if encoding not in ("", "identity") or "content-range" in found:
            return False
        if "no-transform" in found.get("cache-control", "").lower():
            return False
        length = found.get("content-length", "").strip()
        if length.isdigit() and int(length) < self.min_bytes:
            return False
        return self.compressible(found.get("content-type"))

    def plan(
        self,
        method: str,
        status: int,
        request_accept_encoding: str | None,
        response_headers: Sequence[tuple[str, str]],
    ) -> bool:
        """Return whether to gzip this response for this client."""
        return (
            method != "HEAD"
            and accepts_gzip(request_accept_encoding)
            and self.eligible(status, response_headers)
        )

    def wrap(
        self, headers: Sequence[tuple[str, str]], body: Iterable[bytes], known_length: int | None
    ) -> tuple[Headers, Iterable[bytes]]:
        """Return gzip headers and body (call only when ``plan`` said yes).

        A body of known length up to ``buffer_bytes`` is read and compressed whole (an error
        while reading it propagates before any byte is sent); any other body is streamed. The
        result owns ``body``: closing the result closes it, and a body read whole is closed at
        once. Wrap the result, not the body, in the pipeline's ``ClosingBody``.
        """
        if known_length is not None and known_length <= self.buffer_bytes:
            data = _read_all(body)
            packed = zlib.compress(data, self.level, wbits=_GZIP_WBITS)
            if len(packed) >= len(data):
                return with_vary(list(headers)), [data]
            return _gzip_headers(headers, len(packed)), [packed]
        return _gzip_headers(headers, None), GzipStream(body, self.level)

    def apply(
        self,
        method: str,
        status: int,
        request_accept_encoding: str | None,
        headers: Sequence[tuple[str, str]],
        body: Iterable[bytes],
        known_length: int | None = None,
    ) -> tuple[Headers, Iterable[bytes]]:
        """Do it all: compress when planned, else add ``Vary`` where the response varies.

        ``known_length`` defaults to the response's ``Content-Length``.
        """
        result = list(headers)
        if not self.eligible(status, result):
            return result, body
        if method == "HEAD" or not accepts_gzip(request_accept_encoding):
            return with_vary(result), body
        if known_length is None:
            length = _index(result).get("content-length", "").strip()
            known_length = int(length) if length.isdigit() else None
        return self.wrap(result, body, known_length)


class GzipStream:
    """Compress a body as it streams; ``close()`` reaches the body underneath."""

    __slots__ = ("_chunks", "_level")

    def __init__(self, chunks: Iterable[bytes], level: int) -> None:
        self._chunks = chunks
        self._level = level

    def __iter__(self) -> Iterator[bytes]:
        packer = zlib.compressobj(self._level, zlib.DEFLATED, _GZIP_WBITS)
        for chunk in self._chunks:
            # PERF: a sync flush per upstream chunk (up to 64 KiB) costs a few bytes and keeps
            # a slowly streamed body flowing instead of waiting in the compressor's window.
            out = packer.compress(chunk) + packer.flush(zlib.Z_SYNC_FLUSH)
            if out:
                yield out
        # If the body broke off, the exception above leaves the gzip stream without its
        # trailer: the client sees a broken response, never a clean short one.
        yield packer.flush()

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


def with_vary(headers: Headers) -> Headers:
    """Add ``Accept-Encoding`` to ``Vary`` (merging into an existing header)."""
    for i, (name, value) in enumerate(headers):
        if name.lower() == "vary":
            tokens = {token.strip().lower() for token in value.split(",")}
            if "*" in tokens or "accept-encoding" in tokens:
                return headers
            headers[i] = (name, f"{value}, Accept-Encoding" if value.strip() else "Accept-Encoding")
            return headers
    headers.append(("Vary", "Accept-Encoding"))
    return headers


def _gzip_headers(headers: Sequence[tuple[str, str]], length: int | None) -> Headers:
    """Describe a gzip body: new encoding and length, weak ETag, no ranges or digests."""
    result: Headers = []
    for name, value in headers:
        lower = name.lower()
        if lower in ("content-length", "accept-ranges") or lower in _DIGESTS:
            continue
        if lower == "etag" and not value.startswith("W/"):
            value = "W/" + value
        result.append((name, value))
    result.append(("Content-Encoding", "gzip"))
    if length is not None:
        result.append(("Content-Length", str(length)))
    return with_vary(result)


def _read_all(body: Iterable[bytes]) -> bytes:
    try:
        return b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


def _index(headers: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Return lower-case name -> value (repeated headers joined with ', ')."""
    found: dict[str, str] = {}
    for name, value in headers:
        lower = name.lower()
        found[lower] = f"{found[lower]}, {value}" if lower in found else value
    return found
