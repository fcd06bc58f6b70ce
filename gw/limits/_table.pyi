"""The compiled form of SharedTable.check's uncontended path (gw/limits/_table.c)."""

from collections.abc import Callable
from typing import Any

from gw.core.gcra import Decision

class Checker:
    def __init__(
        self,
        fd: int,
        threads: list[Any],
        frozen: dict[int, Any],
        clock: Callable[[], int],
        decision: type[Decision],
    ) -> None: ...
    def check(
        self,
        words: memoryview,
        stripe: int,
        home: int,
        h: int,
        emission: int,
        capacity: int,
        limit: int,
        cost: int,
    ) -> Decision | None: ...
