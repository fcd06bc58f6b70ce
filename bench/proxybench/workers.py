"""One worker's CPU per request, next to the whole process tree's.

wrk's keep-alive connections stay with the worker that accepted them, so a target's workers
serve unequal shares; one worker's CPU is divided by the requests that worker served, which
each kind of target makes observable in its own way:

- gw: every access-log line carries ``"worker": <pid>``; the lines of the chosen worker are
  counted in gunicorn's output (so only with the access log on);
- Express and Fastify: each process counts the requests its HTTP server received and prints
  ``WORKERREQS <pid> <count>`` when sent SIGUSR2 (``express/proxy.js``, ``fastify/proxy.js``);
- nginx and direct: not counted.

The worker is the master's first child (lowest pid), or the process itself when a node peer
runs as one process.
"""

from __future__ import annotations

import os
import re
import signal
import time

from proxybench.procs import children, own_cpu_seconds
from proxybench.targets import Target

NODE_KINDS = ("express", "fastify")


class WorkerProbe:
    """Reads one worker's CPU seconds and the requests it has served so far."""

    def __init__(self, target: Target) -> None:
        self.kind = target.spec.kind
        self.log_path = target.child.log_path
        kids = children(target.child.pid)
        self.pid = kids[0] if kids else target.child.pid
        self._offset = 0
        self._served = 0

    @classmethod
    def for_target(cls, target: Target) -> WorkerProbe | None:
        """Return a probe if this kind of target reports per-worker requests, else None."""
        if target.spec.kind in NODE_KINDS:
            return cls(target)
        if target.spec.kind == "gw" and target.spec.gw.access_log:
            return cls(target)
        return None

    def snapshot(self) -> tuple[float, int] | None:
        """Return (CPU seconds, requests served) of the worker, or None if either is unknown."""
        served = self._node_served() if self.kind in NODE_KINDS else self._gw_served()
        cpu = own_cpu_seconds(self.pid)
        return None if served is None or cpu is None else (cpu, served)

    def _gw_served(self) -> int:
        """Count the worker's access-log lines written since the last call, and return the sum."""
        with self.log_path.open("rb") as log:
            log.seek(self._offset)
            chunk = log.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._offset += len(complete)
        self._served += count_worker_lines(complete, self.pid)
        return self._served

    def _node_served(self, timeout: float = 2.0) -> int | None:
        """Ask the worker for its count (SIGUSR2) and read the answer from its log."""
        before = len(node_counts(self.log_path.read_bytes(), self.pid))
        try:
            os.kill(self.pid, signal.SIGUSR2)
        except ProcessLookupError:
            return None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = node_counts(self.log_path.read_bytes(), self.pid)
            if len(found) > before:
                return found[-1]
            time.sleep(0.01)
        return None


def count_worker_lines(text: bytes, pid: int) -> int:
    """Return how many of gw's access-log lines in ``text`` the worker ``pid`` wrote."""
    return len(re.findall(rb'"worker":%d(?!\d)' % pid, text))


def node_counts(text: bytes, pid: int) -> list[int]:
    """Return every count a node worker ``pid`` printed (``WORKERREQS <pid> <count>``)."""
    return [int(n) for n in re.findall(rb"^WORKERREQS %d (\d+)$" % pid, text, re.MULTILINE)]


def delta(
    before: tuple[float, int] | None, after: tuple[float, int] | None
) -> tuple[float | None, int | None]:
    """Return (worker CPU seconds, worker requests) between two snapshots, None if unknown."""
    if before is None or after is None:
        return None, None
    return after[0] - before[0], after[1] - before[1]
