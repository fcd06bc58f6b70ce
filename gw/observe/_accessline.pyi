"""The compiled form of gw.observe.accesslog's access line (gw/observe/_accessline.c)."""

from collections.abc import Callable
from typing import Any

def configure(
    quoted_table: dict[str | None, str],
    quote: Callable[[str | None], str],
    encode_str: Callable[[str], str],
    encode_any: Callable[[Any], str],
    base_fields: frozenset[str],
    formatted: Callable[[int], str],
    exchange_type: type,
) -> None: ...
def line(exchange: Any, when: str, duration_ms: float, worker: int) -> str | None: ...
def lines(
    batch: list[Any], wall: float, worker: int, fallback: Callable[[Any, float, int], str]
) -> bytes: ...
