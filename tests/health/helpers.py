"""Helpers shared by the health tests."""

from __future__ import annotations

NS = 1_000_000_000
URLS = ("http://10.0.0.1:8080", "http://10.0.0.2:8080", "http://10.0.0.3:8080")


class FakeClock:
    """Monotonic nanoseconds that move only when the test says so."""

    def __init__(self) -> None:
        self.ns = 1_000 * NS

    def __call__(self) -> int:
        return self.ns

    def advance(self, seconds: float) -> None:
        self.ns += int(seconds * NS)
