"""The circuit breaker of one upstream, its state shared by every worker of the host.

closed -> open when, within a rolling ``window``, at least ``min_requests`` requests were
counted and at least ``failure_ratio`` of them failed; open -> every request fails fast with
503 ``circuit_open`` for ``open_seconds``; then half-open: ``half_open_requests`` trial
requests pass (across all workers), any failure reopens, that many successes close it.

The window is BUCKETS buckets of ``window / BUCKETS`` each, kept in the upstream's slot of the
health table; a request counts in the bucket of the moment it finished.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from gw.health import CircuitOpen, HealthUnavailable
from gw.health.layout import (
    BREAKER,
    BUCKET_NS,
    BUCKETS,
    BUCKETS_AT,
    CLOSED,
    HALF_OPEN,
    HALF_OPEN_SINCE,
    OPEN,
    OPEN_UNTIL,
    TRIAL_OKS,
    TRIALS,
    TRIPS,
    UPSTREAM_USED,
    window_counts,
)
from gw.health.table import HealthTable

log = logging.getLogger("gw.health")
NS = 1_000_000_000


@dataclass(frozen=True)
class BreakerPolicy:
    """When an upstream's circuit opens and how it recovers (seconds, counts, a ratio)."""

    window: float = 10.0
    min_requests: int = 20
    failure_ratio: float = 0.5
    open_seconds: float = 10.0
    half_open_requests: int = 3

    def __post_init__(self) -> None:
        if not (self.window > 0 and self.open_seconds > 0 and 0 < self.failure_ratio <= 1):
            raise ValueError("window and open_seconds must be positive, failure_ratio in (0, 1]")
        if self.min_requests < 1 or self.half_open_requests < 1:
            raise ValueError("min_requests and half_open_requests must be at least 1")


class Breaker:
    """The breaker of upstream ``upstream``; its state lives in the health table."""

    def __init__(self, upstream: str, policy: BreakerPolicy) -> None:
        self.upstream = upstream
        self.policy = policy
        self._bucket_ns = max(1, int(policy.window * NS) // BUCKETS)
        self._open_ns = int(policy.open_seconds * NS)

    def admit(self, table: HealthTable, now: int) -> bool:
        """Let a request through; return whether it is a half-open trial.

        Raises:
            CircuitOpen: the circuit is open, or half-open with every trial taken.
        """
        slot = table.upstream(self.upstream)
        # PERF: a closed circuit (the usual case) costs one lock-free read.
        if table.words[slot.base + BREAKER] == CLOSED:
            return False
        try:
            base = table.enter(slot)
        except HealthUnavailable:
            return False  # the breaker protects upstreams; it must not cause an outage itself
        try:
            return self._admit(table.words, base, now)
        finally:
            table.leave(slot)

    def cancel(self, table: HealthTable, trial: bool) -> None:
        """Give back a trial that was admitted but never sent."""
        if not trial:
            return
        slot = table.upstream(self.upstream)
        try:
            with table.held(slot) as base:
                table.words[base + TRIALS] = max(0, table.words[base + TRIALS] - 1)
        except HealthUnavailable:
            pass  # a lost trial is given back when the half-open state goes stale

    def record(self, table: HealthTable, now: int, failed: bool, trial: bool) -> None:
        """Count one finished request; open, close or reopen the circuit as it dictates."""
        slot = table.upstream(self.upstream)
        try:
            base = table.enter(slot)
        except HealthUnavailable:
            return  # one sample lost, never a request
        try:
            event = self._record(table.words, base, now, failed, trial)
        finally:
            table.leave(slot)
        if event:
            log.warning("upstream %s: circuit %s", self.upstream, event)

    def state(self, table: HealthTable) -> str:
        """Return ``closed``, ``open`` or ``half_open``."""
        return table.breaker_state(self.upstream)

    def _admit(self, words: memoryview, base: int, now: int) -> bool:
        """Decide under the lock: half-open the circuit when its time is up, hand out trials."""
        if words[base + BREAKER] == OPEN:
            if now < words[base + OPEN_UNTIL]:
                wait = math.ceil((words[base + OPEN_UNTIL] - now) / NS)
                raise self._refusal(max(1, wait))
            words[base + BREAKER] = HALF_OPEN
            _start_trials(words, base, now)
        if words[base + BREAKER] != HALF_OPEN:
            return False
        if words[base + TRIALS] >= self.policy.half_open_requests:
            if now - words[base + HALF_OPEN_SINCE] < self._open_ns:
                raise self._refusal(1)
            _start_trials(words, base, now)  # the trials went missing (a worker died)
        words[base + TRIALS] += 1
        return True

    def _record(self, words: memoryview, base: int, now: int, failed: bool, trial: bool) -> str:
        """Count a result in the window and apply the transitions; name the one taken."""
        epoch = now // self._bucket_ns
        at = base + BUCKETS_AT + 3 * (epoch % BUCKETS)
        if words[at] != epoch:
            words[at], words[at + 1], words[at + 2] = epoch, 0, 0
        words[at + 1] += 1
        words[at + 2] += failed
        words[base + UPSTREAM_USED] = now
        words[base + BUCKET_NS] = self._bucket_ns
        state = words[base + BREAKER]
        if state == HALF_OPEN and trial:
            return self._judge_trial(words, base, now, failed)
        if state == CLOSED and failed and self._tripped(words, base, now):
            self._open(words, base, now)
            return f"opened for {self.policy.open_seconds:g}s"
        return ""

    def _judge_trial(self, words: memoryview, base: int, now: int, failed: bool) -> str:
        if failed:
            self._open(words, base, now)
            return "reopened: a half-open trial failed"
        words[base + TRIAL_OKS] += 1
        if words[base + TRIAL_OKS] < self.policy.half_open_requests:
            return ""
        words[base + BREAKER] = CLOSED
        _clear_window(words, base)
        return "closed: the half-open trials succeeded"

    def _tripped(self, words: memoryview, base: int, now: int) -> bool:
        """Tell whether the window holds enough requests, failing at the configured ratio."""
        requests, failures = window_counts(words, base, now)
        policy = self.policy
        return requests >= policy.min_requests and failures >= policy.failure_ratio * requests

    def _open(self, words: memoryview, base: int, now: int) -> None:
        words[base + BREAKER] = OPEN
        words[base + OPEN_UNTIL] = now + self._open_ns
        words[base + TRIPS] += 1
        _clear_window(words, base)

    def _refusal(self, retry_after: int) -> CircuitOpen:
        return CircuitOpen(
            f"the circuit breaker of upstream {self.upstream} is open",
            headers={"Retry-After": str(retry_after)},
        )


def _start_trials(words: memoryview, base: int, now: int) -> None:
    words[base + TRIALS] = words[base + TRIAL_OKS] = 0
    words[base + HALF_OPEN_SINCE] = now


def _clear_window(words: memoryview, base: int) -> None:
    for at in range(base + BUCKETS_AT, base + BUCKETS_AT + 3 * BUCKETS):
        words[at] = 0
    words[base + TRIALS] = words[base + TRIAL_OKS] = 0
