"""Rate limiting: GCRA buckets shared by every worker of a host, or by every host via Redis.

Backends (each imported from its own module, so that importing this package costs nothing):

- ``gw.limits.table.SharedTable``: an mmap'd table with striped ``fcntl`` locks, exact
  across the worker processes (and threads) of one host (its file format:
  ``gw.limits.layout``).
- ``gw.limits.redis_backend.RedisLimiter``: one atomic Lua script, exact across hosts; on
  one Redis or on the primary that Redis Sentinel names (``redis+sentinel://``).
- ``gw.limits.redis_cluster.RedisClusterLimiter``: the same on a Redis Cluster; a request
  whose keys sit in different hash slots takes, then gives back (stricter, never laxer).
- ``gw.limits.local.LocalLimiter``: a per-process dict, for tests and single-process runs
  only (N workers admit N times the limit).

Every backend answers ``check_all`` (every limit of one request, decided together: all take
a token or none does) and ``check`` (one bucket) with decisions, or raises
``LimiterUnavailable`` when it cannot decide in time; it never admits silently. The caller
picks fail-open or fail-closed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from gw.core.gcra import Decision, Rate

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
    over-admission this exists to prevent. The shared table raises it for the host's
    ``gw.host.locks.StripeFrozen``.
    """


class TableLayoutError(LimiterUnavailable):
    """The shared table file is missing, foreign, damaged or of another layout version.

    A deployment error rather than a passing one: open the table when a worker starts so
    that this stops the worker instead of every request.
    """


class Limiter(Protocol):
    """Decide whether a request of ``cost`` tokens fits the rates of its buckets now."""

    def check_all(self, buckets: Sequence[tuple[str, Rate]], cost: int = 1) -> list[Decision]:
        """Take ``cost`` tokens from every (key, rate) bucket if each has them, else from none.

        One atomic decision over all the buckets: a request refused by any bucket takes
        nothing from the others, and the order of ``buckets`` never changes the outcome.
        A key listed twice is one bucket drawn from twice. Returns one decision per bucket,
        in order; the request was admitted (and the tokens taken) when all are allowed.

        Raises:
            LimiterUnavailable: the backend could not decide in time (nothing was taken).
        """
        ...

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
