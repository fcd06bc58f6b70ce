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

import threading
import time
from collections import deque
from dataclasses import dataclass

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
    retry_on: frozenset[str] = frozenset({CONNECT_FAILURE})
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
    """Retries allowed per process: ``ratio`` of recent requests plus ``min_per_second``."""

    def __init__(
        self, ratio: float = 0.2, min_per_second: float = 3.0, window: float = 10.0
    ) -> None:
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.window = window
        self._requests: deque[float] = deque()
        self._retries: deque[float] = deque()
        self._lock = threading.Lock()

    def record_request(self, now: float | None = None) -> None:
        with self._lock:
            self._requests.append(time.monotonic() if now is None else now)

    def try_spend(self, now: float | None = None) -> bool:
        """Take one retry from the budget; False when the budget is used up."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._expire(now)
            allowed = self.ratio * len(self._requests) + self.min_per_second * self.window
            if len(self._retries) + 1 > allowed:
                return False
            self._retries.append(now)
            return True

    def _expire(self, now: float) -> None:
        horizon = now - self.window
        for queue in (self._requests, self._retries):
            while queue and queue[0] < horizon:
                queue.popleft()
