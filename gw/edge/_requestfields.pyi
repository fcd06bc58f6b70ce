"""The compiled forms of the edge's passes over a request's fields (gw/edge/_requestfields.c)."""

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

def environ_fields(
    environ: dict[str, Any],
    headers: list[tuple[bytes, bytes]],
    names: Callable[[bytes], tuple[str, str, str]],
) -> tuple[list[tuple[str, str]], dict[str, str]] | None: ...
