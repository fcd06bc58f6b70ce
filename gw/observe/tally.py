"""Per-request histogram observations kept as plain numbers until the worker publishes.

PERF: a prometheus_client ``observe`` goes through several Python calls and changes two
values (the sum and one bucket), each under this process's value lock; a request observes
two histograms and counts itself once, seven value updates in all. A ``Tally`` adds a request
to one row of plain numbers under one lock (the bucket found with ``bisect``, in C), and
``take`` hands the rows over when the worker publishes its values
(``gw.observe.published``), which adds them to the metric children then. The files, and so
every scrape, see the same numbers as before, at the same moments.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Hashable, Sequence
from typing import Any, Generic, TypeVar

Row = list[Any]  # [count, sum, one count per bucket (the last one: +Inf)]
Key = TypeVar("Key", bound=Hashable)


class Tally(Generic[Key]):
    """Observations of one histogram (and the count of a counter beside it), by label key."""

    def __init__(self, bounds: Sequence[float]) -> None:
        """``bounds``: the histogram's finite upper bounds, ascending (+Inf is implied)."""
        self._bounds = tuple(bounds)
        self._width = len(self._bounds) + 1
        self._lock = threading.Lock()
        self._rows: dict[Key, Row] = {}

    def add(self, key: Key, amount: float) -> None:
        """Count one observation of ``amount`` under ``key``."""
        # The first bound >= amount, as prometheus_client's ``amount <= bound`` scan finds it.
        bucket = 2 + bisect_left(self._bounds, amount)
        with self._lock:
            row = self._rows.get(key)
            if row is None:
                row = self._rows[key] = [0, 0.0] + [0] * self._width
            row[0] += 1
            row[1] += amount
            row[bucket] += 1

    def take(self) -> dict[Key, Row]:
        """Return what was counted since the last ``take`` and start afresh."""
        with self._lock:
            rows, self._rows = self._rows, {}
        return rows


def add_to_histogram(child: Any, row: Row) -> None:
    """Add a tallied ``row`` to a prometheus_client histogram child.

    prometheus_client has no call that adds many observations; this writes the two values
    ``observe`` writes, its ``_sum`` and its ``_buckets`` (``tests/metrics/test_tally.py``
    checks that the exposition is the same as after one ``observe`` per observation).
    """
    child._sum.inc(row[1])
    buckets = child._buckets
    for index, hits in enumerate(row[2:]):
        if hits:
            buckets[index].inc(hits)
