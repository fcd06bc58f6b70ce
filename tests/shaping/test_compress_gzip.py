"""gzip: negotiated properly, only where it helps, and always decompressing to the original."""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterator

import pytest

from gw.shaping.compress import Compressor, accepts_gzip, parse_accept_encoding
from gw.shaping.settings import CompressionSettings

TEXT = b'{"items": [' + b",".join(b'{"id": %d, "name": "item"}' % i for i in range(200)) + b"]}"
JSON_HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(TEXT)))]


def names(headers: list[tuple[str, str]]) -> dict[str, str]:
    return {n.lower(): v for n, v in headers}


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        ("gzip", True),
        ("GZIP", True),
        ("gzip, deflate, br", True),
        ("br;q=1.0, gzip;q=0.5", True),
        ("x-gzip", True),
        ("*", True),
        ("gzip;q=0", False),
        ("gzip; q=0.000", False),
        ("*;q=0", False),
        ("*, gzip;q=0", False),
        ("deflate, br", False),
        ("identity", False),
        ("gzip;q=0.5, identity;q=1", False),
        ("gzip;q=abc", False),
        ("gzip;q=2", False),
        ("gzip, gzip;q=0", False),
        ("", False),
        (None, False),
    ],
)
def test_accept_encoding_negotiation(header: str | None, accepted: bool) -> None:
    assert accepts_gzip(header) is accepted


def test_accept_encoding_parse_keeps_q_values() -> None:
    assert parse_accept_encoding("gzip;q=0.8, br , *;q=0") == {"gzip": 0.8, "br": 1.0, "*": 0.0}


def test_compressed_whole_body_decompresses_to_the_original() -> None:
    compressor = Compressor()
    headers = [*JSON_HEADERS, ("ETag", '"v7"'), ("Vary", "Origin"), ("Accept-Ranges", "bytes")]
    assert compressor.plan("GET", 200, "gzip, br", headers)
    new_headers, body = compressor.wrap(headers, iter([TEXT[:100], TEXT[100:]]), len(TEXT))
    packed = b"".join(body)
    assert gzip.decompress(packed) == TEXT
    found = names(new_headers)
    assert found["content-encoding"] == "gzip"
    assert found["content-length"] == str(len(packed)) and len(packed) < len(TEXT) // 4
    assert found["etag"] == 'W/"v7"'
    assert found["vary"] == "Origin, Accept-Encoding"
    assert "accept-ranges" not in found


def test_stream_of_unknown_length_is_gzip_without_content_length() -> None:
    compressor = Compressor()
    headers = [("Content-Type", "text/plain; charset=utf-8")]
    assert compressor.plan("GET", 200, "gzip", headers)  # unknown length counts as large
    chunks = [os.urandom(8).hex().encode() * 500 for _ in range(20)]
    new_headers, body = compressor.wrap(headers, iter(chunks), None)
    pieces = list(body)
    assert gzip.decompress(b"".join(pieces)) == b"".join(chunks)
    assert "content-length" not in names(new_headers)
    assert names(new_headers)["vary"] == "Accept-Encoding"
    assert len(pieces) >= len(chunks)  # each upstream chunk is flushed on its way


def test_large_known_length_is_streamed_not_buffered() -> None:
    compressor = Compressor(CompressionSettings(buffer_bytes=1000))
    new_headers, body = compressor.wrap(JSON_HEADERS, iter([TEXT]), len(TEXT))
    assert "content-length" not in names(new_headers)
    assert gzip.decompress(b"".join(body)) == TEXT


def test_stream_close_reaches_the_upstream_body() -> None:
    closed = []

    def upstream() -> Iterator[bytes]:
        try:
            yield TEXT
            yield TEXT
        finally:
            closed.append(True)

    _, body = Compressor().wrap(JSON_HEADERS, upstream(), None)
    iterator = iter(body)
    next(iterator)
    body.close()  # type: ignore[attr-defined]
    assert closed == [True]


def test_broken_upstream_leaves_the_gzip_stream_unfinished() -> None:
    """A body that breaks off must not look like a clean, complete gzip stream."""

    def upstream() -> Iterator[bytes]:
        yield TEXT
        raise ConnectionError("upstream went away")

    _, body = Compressor().wrap(JSON_HEADERS, upstream(), None)
    received = []
    with pytest.raises(ConnectionError):
        for piece in body:
            received.append(piece)
    unpacker = zlib.decompressobj(31)
    assert unpacker.decompress(b"".join(received)) == TEXT  # what arrived is usable...
    assert not unpacker.eof  # ...but the stream never ended


@pytest.mark.parametrize(
    ("method", "status", "headers", "why"),
    [
        ("HEAD", 200, JSON_HEADERS, "HEAD"),
        ("GET", 204, [("Content-Type", "application/json")], "no content"),
        ("GET", 304, JSON_HEADERS, "not modified"),
        ("GET", 206, [*JSON_HEADERS, ("Content-Range", "bytes 0-9/99")], "partial"),
        ("GET", 200, [("Content-Type", "application/json"), ("Content-Length", "1023")], "small"),
        ("GET", 200, [("Content-Type", "image/png")], "image"),
        ("GET", 200, [("Content-Type", "application/octet-stream")], "binary"),
        ("GET", 200, [("Content-Type", "application/zip")], "archive"),
        ("GET", 200, [("Content-Type", "text/event-stream")], "event stream"),
        ("GET", 200, [], "no content type"),
        ("GET", 200, [*JSON_HEADERS, ("Content-Encoding", "br")], "already encoded"),
        ("GET", 200, [*JSON_HEADERS, ("Cache-Control", "public, no-transform")], "no-transform"),
    ],
)
def test_not_compressed(method: str, status: int, headers: list[tuple[str, str]], why: str) -> None:
    assert not Compressor().plan(method, status, "gzip", headers), why


@pytest.mark.parametrize(
    "content_type",
    ["text/html", "text/css", "application/javascript", "application/ld+json",
     "application/atom+xml", "image/svg+xml", "application/json; charset=utf-8"],
)  # fmt: skip
def test_compressible_types(content_type: str) -> None:
    headers = [("Content-Type", content_type), ("Content-Length", "5000")]
    assert Compressor().plan("GET", 200, "gzip", headers)


def test_small_and_precompressed_bodies_are_untouched_by_apply() -> None:
    compressor = Compressor()
    small = [("Content-Type", "application/json"), ("Content-Length", "20")]
    assert compressor.apply("GET", 200, "gzip", small, [b"x" * 20]) == (small, [b"x" * 20])
    packed = gzip.compress(TEXT)
    pre = [*JSON_HEADERS[:1], ("Content-Encoding", "gzip"), ("Content-Length", str(len(packed)))]
    assert compressor.apply("GET", 200, "gzip", pre, [packed]) == (pre, [packed])


def test_client_without_gzip_gets_the_original_marked_vary() -> None:
    headers, body = Compressor().apply(
        "GET", 200, "br", [*JSON_HEADERS, ("Vary", "Origin")], [TEXT]
    )
    assert body == [TEXT]
    assert names(headers)["vary"] == "Origin, Accept-Encoding"
    assert "content-encoding" not in names(headers)


def test_vary_star_or_existing_accept_encoding_is_left_alone() -> None:
    for vary in ("*", "accept-encoding, Origin"):
        headers, _ = Compressor().apply("GET", 200, "", [*JSON_HEADERS, ("Vary", vary)], [TEXT])
        assert [v for n, v in headers if n == "Vary"] == [vary]


def test_incompressible_body_in_hand_is_sent_as_it_was() -> None:
    noise = os.urandom(4096)
    headers = [("Content-Type", "text/plain"), ("Content-Length", "4096"), ("ETag", '"n"')]
    new_headers, body = Compressor().apply("GET", 200, "gzip", headers, [noise])
    assert b"".join(body) == noise
    assert names(new_headers)["etag"] == '"n"' and "content-encoding" not in names(new_headers)


def test_apply_uses_content_length_to_compress_whole() -> None:
    headers, body = Compressor().apply("GET", 200, "gzip", JSON_HEADERS, iter([TEXT]))
    packed = b"".join(body)
    assert names(headers)["content-length"] == str(len(packed))
    assert gzip.decompress(packed) == TEXT


def test_settings_accept_seed_002_keys_and_level() -> None:
    settings = CompressionSettings.model_validate({"enabled": True, "threshold": 2048, "level": 9})
    compressor = Compressor(settings)
    assert compressor.min_bytes == 2048 and compressor.level == 9
    headers = [("Content-Type", "text/plain"), ("Content-Length", "2000")]
    assert not compressor.plan("GET", 200, "gzip", headers)
    disabled = Compressor(CompressionSettings(enabled=False))
    assert not disabled.plan("GET", 200, "gzip", JSON_HEADERS)
    assert Compressor().level == 6 and Compressor().min_bytes == 1024
