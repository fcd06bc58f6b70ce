"""The compiled forms of gw.upstream.wire (gw/upstream/_wire.c, gw/_collector.h)."""

from collections.abc import Mapping

from gw._collector import Collector as _Collector

Collector = _Collector[tuple[str, str]]  # its fields: gw/_collector.pyi

def request_head(
    method: str, target: str, headers: Mapping[str, str], host: str, chunked: bool, no_body: bool
) -> bytes | None: ...
