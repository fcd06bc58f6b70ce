"""Process groups, CPU accounting over a process tree, readiness."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from proxybench import procs

# A parent that forks a child; both burn CPU for a while, then sleep.
BURNER = """
import os, time
def burn(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
pid = os.fork()
burn(0.3)
os.write(1, f"{os.getpid()}\\n".encode())  # one write: the two processes share the file
time.sleep(60)
"""


def _pids_in_log(child: procs.Child, count: int) -> list[int]:
    """Wait until the burner has printed ``count`` pids and return them."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = child.log_path.read_text().split()
        if len(lines) >= count:
            return [int(line) for line in lines]
        time.sleep(0.05)
    raise AssertionError(f"burner printed {child.log_path.read_text()!r}")


def _alive(pid: int) -> bool:
    """Return whether a process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def test_tree_cpu_counts_children_and_stop_kills_the_whole_group(tmp_path: Path) -> None:
    child = procs.start("burner", [sys.executable, "-c", BURNER], log_dir=tmp_path)
    try:
        pids = _pids_in_log(child, 2)
        assert len(procs.descendants(child.pid)) == 1
        assert procs.tree_cpu_seconds(child.pid) >= 0.5  # parent's 0.3 s and child's 0.3 s
    finally:
        child.stop()
    assert not any(_alive(pid) for pid in pids)


def test_tree_cpu_of_a_missing_process_is_zero() -> None:
    assert procs.tree_cpu_seconds(2**22 + 12345) == 0.0


def test_machine_busy_seconds_grows_while_this_process_burns() -> None:
    before = procs.machine_busy_seconds()
    end = time.process_time() + 0.2
    while time.process_time() < end:
        pass
    assert procs.machine_busy_seconds() - before >= 0.15


def test_wait_ready_reports_an_early_exit_with_the_log(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import sys; print('bind failed'); sys.exit(3)"]
    child = procs.start("dies", argv, log_dir=tmp_path)
    with pytest.raises(procs.ChildFailed, match="bind failed"):
        procs.wait_ready(child, procs.free_port(), "/", timeout=10)
    child.stop()


def test_free_port_is_bindable() -> None:
    import socket

    port = procs.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    assert 0 < port < 65536 and os.getpid() > 0
