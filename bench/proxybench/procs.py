"""Child processes of the benchmark: start, wait until they answer, measure CPU, stop."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ChildFailed(RuntimeError):
    """A benchmark child process died or never answered."""


@dataclass
class Child:
    """One started process and its whole process group (it leads a new session)."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        """Return the process id, which is also the process group id."""
        return self.proc.pid

    def alive(self) -> bool:
        """Return whether the group leader is still running."""
        return self.proc.poll() is None

    def log_tail(self, lines: int = 25) -> str:
        """Return the last lines of the child's combined stdout and stderr."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 5.0) -> None:
        """Stop the whole process group: SIGTERM, then SIGKILL after ``grace`` seconds."""
        _signal_group(self.pid, signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            _signal_group(self.pid, signal.SIGKILL)
            self.proc.wait(grace)
        # Workers can outlive their master for a moment; the group is ours alone.
        _signal_group(self.pid, signal.SIGKILL)
        _wait_group_gone(self.pid, grace)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to a process group that may already be gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _wait_group_gone(pgid: int, timeout: float) -> None:
    """Wait until no process of the group is left (signals are delivered asynchronously)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.01)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start(
    name: str,
    argv: Sequence[str],
    *,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Child:
    """Start ``argv`` in its own session with output to ``log_dir/name.log``."""
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    return Child(name, proc, log_path)


def fetch(
    port: int, path: str, headers: Mapping[str, str] | None = None, timeout: float = 2.0
) -> tuple[int, bytes]:
    """GET ``path`` from 127.0.0.1:``port`` and return the status and body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=dict(headers or {}))
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_ready(
    child: Child, port: int, path: str, timeout: float, headers: Mapping[str, str] | None = None
) -> bytes:
    """Poll until ``child`` answers ``GET path`` (with ``headers``) with 200; return the body.

    Raises:
        ChildFailed: the child exited, or did not answer 200 within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not child.alive():
            raise ChildFailed(f"{child.name} exited early:\n{child.log_tail()}")
        try:
            status, body = fetch(port, path, headers)
        except OSError as ex:
            last = repr(ex)
        else:
            if status == 200:
                return body
            last = f"status {status}: {body[:200]!r}"
        time.sleep(0.1)
    raise ChildFailed(f"{child.name} not ready after {timeout:.0f}s ({last}):\n{child.log_tail()}")


def _stat_fields(pid: str) -> tuple[int, int] | None:
    """Return (ppid, utime+stime+cutime+cstime ticks) of a process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: split after the last ')'.
    fields = raw[raw.rfind(b")") + 2 :].split()
    return int(fields[1]), sum(int(value) for value in fields[11:15])


def own_cpu_seconds(pid: int) -> float | None:
    """Return the CPU time (utime + stime) of one process alone, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def children(pid: int) -> list[int]:
    """Return the pids of the live direct children of ``pid``, lowest first."""
    return sorted(kid for kid, (ppid, _) in _process_table().items() if ppid == pid)


def _process_table() -> dict[int, tuple[int, int]]:
    """Return pid -> (ppid, ticks) for every process visible in /proc."""
    table: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(entry)
            if fields is not None:
                table[int(entry)] = fields
    return table


def tree_cpu_seconds(root: int) -> float:
    """Return the CPU time (user + system) used so far by ``root`` and all its descendants.

    Each live process counts its own time plus that of its children already reaped, so a
    worker that exited and was waited for by its master still counts, once.
    """
    table = _process_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    ticks, pending = 0, [root]
    while pending:
        pid = pending.pop()
        ticks += table.get(pid, (0, 0))[1]
        pending.extend(children.get(pid, []))
    return ticks / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """Return the CPU seconds all cores have spent running processes since boot, plus steal.

    Interrupt and softirq time are left out: the kernel's loopback work for the benchmark's own
    traffic lands there, charged to no process.
    """
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = fields
    return (user + nice + system + steal) / CLOCK_TICKS


def wait_for_quiet(limit: float, cores: float = 0.25, window: float = 0.5) -> float:
    """Wait up to ``limit`` seconds for the box to stay under ``cores`` busy for one window.

    Returns:
        The seconds waited.
    """
    began = time.monotonic()
    while time.monotonic() - began < limit:
        busy = machine_busy_seconds()
        time.sleep(window)
        if (machine_busy_seconds() - busy) / window < cores:
            break
    return time.monotonic() - began


def descendants(root: int) -> list[int]:
    """Return the pids of every live descendant of ``root``."""
    table = _process_table()
    found, pending = [], [root]
    while pending:
        parent = pending.pop()
        kids = [pid for pid, (ppid, _) in table.items() if ppid == parent]
        found.extend(kids)
        pending.extend(kids)
    return found
