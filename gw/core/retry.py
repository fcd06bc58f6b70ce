"""When a failed upstream attempt may be tried again, and how much retrying an upstream may do.

Pure module. Retries are only ever made before anything of the response reached the client
(the pipeline streams a response only after the attempt that produced it is final), and only
when the request cannot run twice by accident:

- a failure that provably happened before any byte was sent (the connection was refused or
  could not be made) may be retried for any method: the upstream never saw the request, and
  the client's body has not been read yet;
- any other retryable failure (a timeout, a reset, a 502/503/504 answer) only for idempotent
  methods without a request body (a streamed body cannot be sent twice);
- a reused connection that closed before any byte of the answer after being idle for at least
  ``STALE_IDLE_SECONDS`` (the upstream's keep-alive timeout raced the request) once more, as
  one of the attempts, for idempotent methods without a body, whatever ``retry_on`` says.

A retry budget bounds the extra load an outage can cause: retries may add at most ``ratio`` of
the requests seen in the last ``window`` seconds (plus ``min_per_second``), per worker process.
"""

from __future__ import annotations

import math
import threading
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})

# Failure kinds, as the upstream adapter classifies them.
CONNECT_FAILURE = "connect_failure"  # refused / unreachable: nothing was sent
TIMEOUT = "timeout"
RESET = "reset"
STATUS = "status"  # a retryable status code was answered
# A reused connection, idle long enough for the upstream's keep-alive timeout to have closed
# it, closed before any byte of the answer: the request was most likely never read.
STALE = "stale"
STALE_IDLE_SECONDS = 1.0


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 2  # tries in all, the first included
    # A reset (the connection closed or was reset before an answer) is retried by default, as
    # nginx's proxy_next_upstream does: a target that dies resets the requests it had read but
    # not answered, and only idempotent bodyless ones are ever sent again (may_retry).
    retry_on: frozenset[str] = frozenset({CONNECT_FAILURE, RESET})
    statuses: frozenset[int] = frozenset({502, 503, 504})
    per_try_timeout: float | None = None
    backoff: float = 0.025  # seconds before the second try, doubled each time
    max_retry_after: float = 1.0  # an upstream's Retry-After longer than this is not waited for

    def may_retry(self, attempt: int, method: str, has_body: bool, kind: str) -> bool:
        """Whether try number ``attempt`` (1-based) that failed with ``kind`` may be repeated.

        A ``STALE`` failure may be repeated without being listed in ``retry_on``, but like any
        other retry it is one of the ``attempts`` and is charged to the budget, and only for an
        idempotent method without a body: a request is delivered at most ``attempts`` times.
        """
        if attempt >= self.attempts or (kind not in self.retry_on and kind != STALE):
            return False
        if kind == CONNECT_FAILURE:
            return True
        return method in IDEMPOTENT and not has_body

    def delay(self, attempt: int, retry_after: str | None = None) -> float | None:
        """Seconds to wait before the next try; None when the upstream asks for too long."""
        if retry_after is not None:
            seconds = _seconds(retry_after)
            if seconds is None or seconds > self.max_retry_after:
                return None
            return seconds
        return float(self.backoff * 2 ** (attempt - 1))


def _seconds(retry_after: str) -> float | None:
    value = retry_after.strip()
    return float(value) if value.isdigit() else None


class RetryBudget:
    """Retries allowed per process: ``ratio`` of recent requests plus ``min_per_second``.

    "Recent" is the last ``window`` seconds counted in whole seconds: the current second and
    the ``window - 1`` before it (an event is forgotten between ``window - 1`` and ``window``
    seconds after it happened). Per worker process: each worker has its own budget.

    PERF: memory is O(window), not O(requests): one ring slot of (requests, retries) counters
    per second, and running totals, so recording and spending cost O(1) (plus clearing the
    slots of the seconds that passed, at most ``window`` of them).
    """

    def __init__(
        self,
        ratio: float = 0.2,
        min_per_second: float = 3.0,
        window: float = 10.0,
        lock: AbstractContextManager[Any] | None = None,
    ) -> None:
        """``lock``: what guards the counters (default: a ``threading.Lock``); recording and
        spending never wait inside it."""
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.window = window
        self._slots = max(1, math.ceil(window))
        self._requests = [0] * self._slots
        self._retries = [0] * self._slots
        self._total_requests = 0
        self._total_retries = 0
        self._second = 0  # the second the ring's newest slot counts
        self._lock = lock if lock is not None else threading.Lock()

    def record_request(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            # PERF: within the ring's newest second (nearly every request) the ring does not
            # move: no call to _advance.
            newest = self._second
            slot = newest % self._slots if newest <= now < newest + 1 else self._advance(now)
            self._requests[slot] += 1
            self._total_requests += 1

    def try_spend(self, now: float | None = None) -> bool:
        """Take one retry from the budget; False when the budget is used up."""
        with self._lock:
            slot = self._advance(time.monotonic() if now is None else now)
            allowed = self.ratio * self._total_requests + self.min_per_second * self.window
            if self._total_retries + 1 > allowed:
                return False
            self._retries[slot] += 1
            self._total_retries += 1
            return True

    def _advance(self, now: float) -> int:
        """Move the ring up to ``now``'s second (clearing the seconds passed); return its slot.

        A clock that steps back (only an injected one can) counts as the newest second.
        """
        second = math.floor(now)
        passed = second - self._second
        if passed > 0:
            for cleared in range(self._second + 1, self._second + 1 + min(passed, self._slots)):
                self._clear(cleared % self._slots)
            self._second = second
        return self._second % self._slots

    def _clear(self, slot: int) -> None:
        self._total_requests -= self._requests[slot]
        self._total_retries -= self._retries[slot]
        self._requests[slot] = self._retries[slot] = 0
