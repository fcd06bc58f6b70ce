"""The compiled forms of the edge's passes over a request's head (gw/edge/_requestfields.c)."""

from collections.abc import Callable
from typing import Any

class Collector:
    fields: list[tuple[bytes, bytes]] | None
    def __init__(
        self,
        slow: Callable[[bytes, bytes], None],
        size: int,
        count: int,
        names: dict[bytes, str] | None = None,
    ) -> None: ...
    def __call__(self, name: bytes, value: bytes) -> None: ...

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
