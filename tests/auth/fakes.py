"""Test doubles for the auth tier."""

from __future__ import annotations

import threading
import time

from gw.auth.jwks import REFRESH_THREAD


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def settle_refreshes(timeout: float = 10.0) -> None:
    """Wait until no background JWKS refresh (``gw.auth.jwks``) is running in this process.

    Refreshes of a known key set run in the background; a test that reads their outcome (the
    next key set, a warning, the number of fetches) waits for them first.
    """
    deadline = time.monotonic() + timeout
    while any(t.name == REFRESH_THREAD for t in threading.enumerate()):
        assert time.monotonic() < deadline, "a JWKS refresh is still running"
        time.sleep(0.005)
