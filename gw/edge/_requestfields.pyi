"""The compiled forms of the edge's passes over a request's head (gw/edge/_requestfields.c)."""

from collections.abc import Callable
from typing import Any

from gw._collector import Collector as _Collector

Collector = _Collector[tuple[bytes, bytes]]  # its fields: gw/_collector.pyi

def configure(
    headers_type: Callable[[list[tuple[str, str]], dict[str, str]], Any],
    headers_key: str,
    cgi: tuple[tuple[str, str, str], ...],
    absolute_path: Callable[[str], str],
    decoded_path: Callable[[str], str],
) -> None: ...
def environ(
    base: dict[str, Any],
    headers: list[tuple[bytes, bytes]],
    names: Callable[[bytes], tuple[str, str, str]],
    url: bytes,
    method: str,
    version: str,
) -> dict[str, Any] | None: ...
