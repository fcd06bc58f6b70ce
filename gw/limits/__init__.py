"""Rate limiting: GCRA buckets shared by every worker of a host, or by every host via Redis.

Backends (each imported from its own module, so that importing this package costs nothing):

- ``gw.limits.table.SharedTable``: an mmap'd table with striped ``fcntl`` locks, exact
  across the worker processes (and threads) of one host.
- ``gw.limits.redis_backend.RedisLimiter``: one atomic Lua script, exact across hosts.
- ``gw.limits.local.LocalLimiter``: a per-process dict, for tests and single-process runs
  only (N workers admit N times the limit).

Every backend answers ``check`` with a ``Decision`` or raises ``LimiterUnavailable`` when it
cannot decide in time; it never admits silently. The caller picks fail-open or fail-closed.
"""

from __future__ import annotations

from typing import Any, Protocol

from gw.limits.gcra import Decision, Rate

__all__ = [
    "Decision",
    "Limiter",
    "LimiterAdmin",
    "LimiterUnavailable",
    "Rate",
    "StripeFrozen",
    "TableLayoutError",
]


class LimiterUnavailable(RuntimeError):
    """The backend could not decide within its deadline (lock, table full, Redis down)."""


class StripeFrozen(LimiterUnavailable):
    """A stripe's lock is held by a process that is stopped (SIGSTOP, a debugger, a frozen
    cgroup): no decision on it can be exact until that process goes on or dies.

    Callers must refuse, whatever their fail-open rule: admitting without counting is the
    over-admission this exists to prevent (see ``gw.limits.locks``).
    """


class TableLayoutError(LimiterUnavailable):
    """The shared table file is missing, foreign, damaged or of another layout version.

    A deployment error rather than a passing one: open the table when a worker starts so
    that this stops the worker instead of every request.
    """


class Limiter(Protocol):
    """Decide whether a request of ``cost`` tokens under ``key`` fits its ``rate`` now."""

    def check(self, key: str, rate: Rate, cost: int = 1) -> Decision:
        """Take ``cost`` tokens from ``key``'s bucket if they fit; raise LimiterUnavailable."""
        ...


class LimiterAdmin(Protocol):
    """Operator view of a limiter's state, for the ``gw limits`` command."""

    def stats(self) -> dict[str, Any]:
        """Return counters describing the backend (sizes, usage, failures)."""
        ...

    def peek(self, key: str, rate: Rate) -> Decision | None:
        """Describe ``key``'s bucket now without taking from it.

        ``remaining`` counts the requests of cost 1 that could pass now, ``allowed`` says
        whether the next one would, ``retry_after`` when it would. None when the key has no
        live bucket (it is full, or was never seen).
        """
        ...

    def reset(self, key: str) -> bool:
        """Forget ``key``'s bucket (make it full); return whether it held any state."""
        ...
