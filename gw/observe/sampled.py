"""JSON lines about would-be decisions, at most a few per second per subject per worker.

Pure module (standard library only). A shadow limit or a shadow auth policy (``mode: shadow``)
would reject many requests of a burst; one line per would-be rejection could bury the log,
so a ``SampledLog`` writes at most ``per_second`` lines per subject (a limit's or a route's
name, which the config bounds) in each wall-clock second, in each worker process. The next
line written for that subject says how many were left out (``"suppressed": n``); the metrics
count every one.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

PER_SECOND = 5


class SampledLog:
    """Write JSON lines to ``logger``, at most ``per_second`` per subject each second."""

    def __init__(
        self,
        logger: logging.Logger,
        per_second: int = PER_SECOND,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.logger = logger
        self.per_second = per_second
        self._clock = clock
        self._lock = threading.Lock()  # gthread workers share one instance between threads
        # subject -> [second, lines written in it, lines left out since the last written]
        self._counts: dict[str, list[int]] = {}

    def write(self, subject: str, line: dict[str, Any]) -> bool:
        """Log ``line`` as JSON unless ``subject`` used its lines this second; say if it was."""
        second = int(self._clock())
        with self._lock:
            count = self._counts.setdefault(subject, [second, 0, 0])
            if count[0] != second:
                count[0], count[1] = second, 0
            if count[1] >= self.per_second:
                count[2] += 1
                return False
            count[1] += 1
            suppressed, count[2] = count[2], 0
        if suppressed:
            line = {**line, "suppressed": suppressed}
        self.logger.warning(json.dumps(line, separators=(",", ":"), ensure_ascii=True))
        return True
