"""The operator's view of the health table: every target and upstream, read without locks.

``gw upstreams`` and the metrics read it from any process; nothing is claimed or changed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gw.health import HealthTableError
from gw.health.layout import (
    ACTIVE_AT,
    ACTIVE_DOWN,
    ACTIVE_STATUS,
    ACTIVE_STREAK,
    BREAKER,
    EJECTED_TOTAL,
    EJECTED_UNTIL,
    EJECTIONS,
    FAILS,
    FAILURES,
    OPEN,
    OPEN_UNTIL,
    OUTSTANDING,
    PROBE_UNTIL,
    TRIPS,
    breaker_state,
    window_counts,
)
from gw.health.state import default_path
from gw.health.table import HealthTable

__all__ = ["snapshot"]


def snapshot(
    path: str | None = None, *, clock: Callable[[], int] | None = None
) -> list[dict[str, Any]]:
    """Read the state of every target and upstream of the host (from any process, no locks).

    For the operator's tools (``gw upstreams``, metrics): opens the table read-only, claims
    nothing, and describes each slot as a JSON-ready dict with ``kind`` "target" or "upstream".

    Raises:
        HealthTableError: there is no table to read.
    """
    path = path or default_path()
    if not path:
        raise HealthTableError("GW_RUNTIME_DIR is not set: no health table to read")
    with HealthTable.open(path, attach=False, clock=clock) as table:
        now = table.now()
        words = table.words
        return [
            _describe_target(words, base, name, now)
            if targets
            else _describe_upstream(words, base, name, now)
            for targets, name, base in table.entries()
        ]


def _describe_target(words: memoryview, base: int, name: str, now: int) -> dict[str, Any]:
    upstream, _, url = name.partition("\0")
    until = words[base + EJECTED_UNTIL]
    return {
        "kind": "target",
        "upstream": upstream,
        "target": url,
        "state": _target_state(words, base, now),
        "outstanding": words[base + OUTSTANDING],
        "consecutive_failures": words[base + FAILS],
        "ejected_for": round(max(0, until - now) / 1e9, 3),
        "ejections_in_a_row": words[base + EJECTIONS],
        "times_ejected": words[base + EJECTED_TOTAL],
        "failures": words[base + FAILURES],
        "active": _describe_active(words, base, now),
    }


def _target_state(words: memoryview, base: int, now: int) -> str:
    until = words[base + EJECTED_UNTIL]
    if words[base + ACTIVE_DOWN]:
        return "down"
    if until > now:
        return "ejected"
    if until:
        return "probing" if words[base + PROBE_UNTIL] > now else "half_open"
    return "healthy"


def _describe_active(words: memoryview, base: int, now: int) -> dict[str, Any] | None:
    if not words[base + ACTIVE_AT]:
        return None  # never checked
    return {
        "up": not words[base + ACTIVE_DOWN],
        "streak": words[base + ACTIVE_STREAK],
        "last_status": words[base + ACTIVE_STATUS],
        "checked_ago": round((now - words[base + ACTIVE_AT]) / 1e9, 3),
    }


def _describe_upstream(words: memoryview, base: int, name: str, now: int) -> dict[str, Any]:
    requests, failures = window_counts(words, base, now)
    return {
        "kind": "upstream",
        "upstream": name,
        "breaker": breaker_state(words, base, now),
        "open_for": round(max(0, words[base + OPEN_UNTIL] - now) / 1e9, 3)
        if words[base + BREAKER] == OPEN
        else 0.0,
        "window_requests": requests,
        "window_failures": failures,
        "trips": words[base + TRIPS],
    }
