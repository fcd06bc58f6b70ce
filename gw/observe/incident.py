"""Log a failing backend once per incident, with counts, not once per request.

Pure module (standard library only). A backend that every request uses (the Redis rate
limiter, the Redis cache) fails for every request while it is down: one warning per failure
buried the log in 13,936 lines in 14 s of outage. An ``IncidentLog`` turns that into:

- the first failure: one WARNING with the error;
- while it keeps failing: at most one WARNING every ``every`` seconds, with the number of
  failures since the previous line and the latest error;
- the first success after failures: one WARNING with the total and the duration.

One instance per backend per process (each worker logs its own incidents).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

DEFAULT_EVERY = 10.0


class IncidentLog:
    """The failures of one backend in this process, logged as incidents (see module doc)."""

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        every: float = DEFAULT_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.what = what  # e.g. "rate limiter redis", as the log lines name the backend
        self.every = every
        self._clock = clock
        self._lock = threading.Lock()
        self._failing = False
        self._started = 0.0
        self._last_line = 0.0
        self._total = 0
        self._unreported = 0

    @property
    def failing(self) -> bool:
        """Whether the backend's last operation failed."""
        return self._failing

    def failed(self, error: object, consequence: str = "") -> None:
        """Count one failure; log it if it starts an incident or ``every`` has passed.

        ``consequence`` says what the request got instead (e.g. "admitting (fail_open)").
        """
        now = self._clock()
        with self._lock:
            self._total += 1
            if not self._failing:
                self._failing, self._started, self._last_line = True, now, now
                self._total, self._unreported = 1, 0
                self.logger.warning(
                    "%s failed: %s%s (further failures are counted, not logged each)",
                    self.what,
                    error,
                    f"; {consequence}" if consequence else "",
                )
                return
            self._unreported += 1
            if now - self._last_line >= self.every:
                self.logger.warning(
                    "%s still failing: %d failure(s) in the last %.0fs, %d since it began "
                    "%.0fs ago; latest: %s",
                    self.what,
                    self._unreported,
                    now - self._last_line,
                    self._total,
                    now - self._started,
                    error,
                )
                self._last_line, self._unreported = now, 0

    def succeeded(self) -> None:
        """Note a success; log the end of the incident if one was going on."""
        if not self._failing:  # PERF: the common case reads one attribute, takes no lock
            return
        now = self._clock()
        with self._lock:
            if not self._failing:
                return
            self._failing = False
            self.logger.warning(
                "%s recovered after %.1fs: %d failure(s) in all during the incident",
                self.what,
                now - self._started,
                self._total,
            )
