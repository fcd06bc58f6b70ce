"""The compiled form of gw.observe.instruments's grouping of a batch (gw/observe/_grouped.c)."""

from typing import Any

def configure(exchange_type: type, /) -> None: ...
def grouped(
    batch: list[Any], methods: frozenset[str], other: str, no_route: str, proxy: str, /
) -> tuple[dict[tuple[str, str, int], list[float]], dict[tuple[str, str], list[Any]]] | None: ...
