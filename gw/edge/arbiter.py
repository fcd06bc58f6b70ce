"""The gunicorn master for gw: a reload (HUP) never leaves the host without workers.

gunicorn's ``Arbiter.reload()`` (23-27) spawns the new workers, SIGTERMs the old ones, then
(since 26, to avoid a second SIGTERM) blocks for up to ``graceful_timeout`` until the old ones
have left, only reaping meanwhile. Three faults follow: a new worker that dies in that window
is not replaced (nothing accepts until the wait ends), a HUP that arrives meanwhile is read
late, and the old workers' own ``graceful_timeout`` cuts long transfers. Before 26 the old
workers stayed in the count, so a dead new worker was not replaced either.

``GwArbiter`` runs reloads the way nginx's master does: a HUP reloads and checks the config at
once and retires the current generation; the main loop spawns the new generation and keeps
it at full strength while the retired workers finish what they serve. Each retired worker has
its own deadline, the drain limit (``GW_DRAIN_TIMEOUT``, nginx's ``worker_shutdown_timeout``),
separate from ``graceful_timeout`` (which still bounds a full stop). At the limit it gets
SIGQUIT, which makes it name the requests it cuts (``gunicorn.conf.py`` ``worker_int``), and
SIGKILL ``QUIT_GRACE`` seconds later if it is still there.

Retired workers stay in gunicorn's ``WORKERS``, so gunicorn's own code keeps reaping them,
killing them if they stop sending heartbeats, and stopping them with the master; only the
count that ``manage_workers`` keeps up excludes them.
"""

from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import dataclass
from typing import Any, cast

from gunicorn.arbiter import Arbiter

from gw.errors import ConfigError

DEFAULT_DRAIN_TIMEOUT = 300.0
QUIT_GRACE = 5.0  # seconds between SIGQUIT (name the cut requests, exit) and SIGKILL


def drain_timeout_from_env() -> float:
    """``GW_DRAIN_TIMEOUT``: seconds a retired worker may keep serving (default 300).

    Raises:
        ConfigError: the value is not a number of seconds above 0.
    """
    raw = os.environ.get("GW_DRAIN_TIMEOUT", "")
    if not raw:
        return DEFAULT_DRAIN_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError([f"GW_DRAIN_TIMEOUT: must be a number of seconds above 0, not {raw!r}"])
    return seconds


def worker_stop_limit(graceful_timeout: float) -> int:
    """The limit a stopping worker sets itself: later than any the master enforces.

    The master cuts a retired worker at the drain limit (and a stopping one at
    ``graceful_timeout``): the worker must not cut its requests first on its own, or they
    would be cut before the limit, and without being named.
    """
    return math.ceil(max(drain_timeout_from_env(), graceful_timeout) + 2 * QUIT_GRACE)


@dataclass
class _Retired:
    """A worker of an older generation, finishing what it serves."""

    deadline: float  # time.monotonic() after which its requests are cut
    told: bool = False  # SIGTERM sent
    quit_sent: float | None = None  # when SIGQUIT was sent


class GwArbiter(Arbiter):  # type: ignore[misc]
    """gunicorn's arbiter with reloads that keep the new generation at strength while the
    old one drains (see the module docstring)."""

    drain_timeout: float
    retired: dict[int, _Retired]
    _reloading: bool

    @classmethod
    def adopt(cls, server: Any, drain_timeout: float) -> GwArbiter:
        """Make gunicorn's arbiter ``server`` a ``GwArbiter``; call it before the first fork.

        gunicorn has no setting for its arbiter class: ``gunicorn gw.app:app`` always builds a
        plain ``Arbiter``, and the ``on_starting`` hook is the first place that gets it,
        before it forks any worker. Changing the class of that one object keeps gunicorn's own
        start, main loop and stop, and swaps in only the methods defined here.
        """
        if type(server) is not Arbiter:
            raise TypeError(f"expected gunicorn's Arbiter, got {type(server).__name__}")
        server.__class__ = cls
        adopted = cast(GwArbiter, server)
        adopted.drain_timeout = drain_timeout
        adopted.retired = {}
        adopted._reloading = False
        return adopted

    def reload(self) -> None:
        """Reload the config and retire the current generation; return to the main loop now."""
        generation = self.current_generation()
        everyone = dict(self.WORKERS)
        # gunicorn's reload() reloads the config (gunicorn.conf.py, app, logs, listeners; its
        # on_reload hook checks and publishes gw's config), then spawns workers and waits for
        # the old ones to leave. With spawning held back (spawn_worker, manage_workers) and
        # no worker in sight, only the first part has an effect: there is nobody to wait for.
        self.WORKERS.clear()
        self._reloading = True
        try:
            super().reload()
        finally:
            self._reloading = False
            self.WORKERS.update(everyone)
        self.retire(generation, "reload")

    def spawn_worker(self) -> int | None:
        if self._reloading:
            return None
        return cast(int, super().spawn_worker())

    def manage_workers(self) -> None:
        """Keep ``num_workers`` of the current generation running; drain the retired ones."""
        if self._reloading:
            return
        self._forget_reaped()
        current = self.current_generation()
        if len(current) > self.num_workers:  # SIGTTOU: the oldest leave gracefully
            self.retire(current[: len(current) - self.num_workers], "fewer workers")
        for _ in range(self.num_workers - len(current)):
            self.spawn_worker()
        self._drain(time.monotonic())

    def kill_workers(self, sig: int) -> None:
        """As gunicorn's; before SIGKILL (the end of a stop), SIGQUIT and 1 s to leave.

        gunicorn's ``stop()`` SIGKILLs the workers still there at ``graceful_timeout``; SIGQUIT
        first lets each name the requests it cuts (``worker_int`` in gunicorn.conf.py).
        """
        if sig == signal.SIGKILL and self.WORKERS:
            super().kill_workers(signal.SIGQUIT)
            deadline = time.monotonic() + 1.0
            while self.WORKERS and time.monotonic() < deadline:
                time.sleep(0.05)
                self.reap_workers()
        super().kill_workers(sig)

    def current_generation(self) -> list[int]:
        """Pids of the workers that are not retired, oldest first."""
        workers = sorted(self.WORKERS.items(), key=lambda item: item[1].age)
        return [pid for pid, _ in workers if pid not in self.retired]

    def retire(self, pids: list[int], reason: str) -> None:
        """Mark ``pids`` as draining; they are told to stop once their successors are spawned."""
        if not pids:
            return
        deadline = time.monotonic() + self.drain_timeout
        for pid in pids:
            self.retired[pid] = _Retired(deadline)
        self.log.info(
            "retiring worker(s) %s (%s): they finish their requests, for %g s at most",
            ", ".join(map(str, pids)),
            reason,
            self.drain_timeout,
        )

    def _forget_reaped(self) -> None:
        for pid in [pid for pid in self.retired if pid not in self.WORKERS]:
            del self.retired[pid]

    def _drain(self, now: float) -> None:
        """Tell retired workers to stop; cut the ones past the drain limit."""
        for pid, worker in list(self.retired.items()):
            if not worker.told:
                worker.told = True
                self.kill_worker(pid, signal.SIGTERM)
            elif worker.quit_sent is None and now >= worker.deadline:
                worker.quit_sent = now
                self.log.warning(
                    "worker %s still serving at the drain limit (%g s, GW_DRAIN_TIMEOUT): "
                    "cutting its requests",
                    pid,
                    self.drain_timeout,
                )
                self.kill_worker(pid, signal.SIGQUIT)
            elif worker.quit_sent is not None and now - worker.quit_sent >= QUIT_GRACE:
                self.kill_worker(pid, signal.SIGKILL)
