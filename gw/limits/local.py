"""GCRA buckets in a plain dict: one process only.

Warning: every process keeps its own buckets, so N gunicorn workers admit N times the
configured limit. For tests, development servers and the benchmark's baseline; production
uses ``SharedTable`` (one host) or ``RedisLimiter`` (many hosts).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from gw.core.gcra import NS_PER_SECOND, Decision, Rate, decide, decide_all, describe
from gw.limits import LimiterUnavailable

DEFAULT_MAX_KEYS = 65536


class LocalLimiter:
    """Per-process GCRA buckets, bounded to ``max_keys`` live keys; thread-safe."""

    def __init__(
        self, max_keys: int = DEFAULT_MAX_KEYS, clock: Callable[[], int] = time.monotonic_ns
    ) -> None:
        self.max_keys = max_keys
        self._clock = clock
        self._tats: dict[str, int] = {}
        self._full = 0
        self._lock = threading.Lock()

    def check(self, key: str, rate: Rate, cost: int = 1) -> Decision:
        """Take ``cost`` tokens from ``key``'s bucket if they fit; raise LimiterUnavailable."""
        with self._lock:
            now = self._clock()
            decision, tat = decide(self._tats.get(key), now, rate, cost)
            if tat is not None:
                if key not in self._tats and len(self._tats) >= self.max_keys:
                    self._make_room(now, 1)
                self._tats[key] = tat
        return decision

    def check_all(self, buckets: Sequence[tuple[str, Rate]], cost: int = 1) -> list[Decision]:
        """Take ``cost`` tokens from every bucket if each has them, else from none."""
        with self._lock:
            now = self._clock()
            decisions, planned = decide_all(buckets, self._tats, now, cost)
            if planned is not None:
                fresh = sum(1 for key in planned if key not in self._tats)
                if fresh and len(self._tats) + fresh > self.max_keys:
                    self._make_room(now, fresh)
                self._tats.update(planned)
        return decisions

    def peek(self, key: str, rate: Rate) -> Decision | None:
        """Describe ``key``'s bucket now without taking from it; None when it is full."""
        with self._lock:
            now = self._clock()
            tat = self._tats.get(key)
            if tat is None or tat <= now:
                return None
            return describe(tat, now, rate.emission_ns, rate, NS_PER_SECOND)

    def reset(self, key: str) -> bool:
        """Make ``key``'s bucket full again; return whether it held live state."""
        with self._lock:
            tat = self._tats.pop(key, None)
            return tat is not None and tat > self._clock()

    def stats(self) -> dict[str, Any]:
        """Return the number of live keys and how often the dict was full."""
        with self._lock:
            now = self._clock()
            used = sum(1 for tat in self._tats.values() if tat > now)
            return {
                "backend": "local",
                "slots": self.max_keys,
                "used": used,
                "table_full": self._full,
            }

    def _make_room(self, now: int, needed: int) -> None:
        """Drop every full bucket; raise LimiterUnavailable if ``needed`` new keys still miss."""
        self._tats = {key: tat for key, tat in self._tats.items() if tat > now}
        if len(self._tats) + needed > self.max_keys:
            self._full += 1
            raise LimiterUnavailable("rate-limit table full")
