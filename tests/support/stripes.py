"""Hold a stripe of a lock file from another process, as a worker of the same host would."""

from __future__ import annotations

import subprocess
import sys
import textwrap

HOLD = textwrap.dedent(
    """
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR)
    fcntl.lockf(fd, fcntl.LOCK_EX, 1, int(sys.argv[2]))
    print("held", flush=True)
    time.sleep(30)
    """
)


def hold_stripe(path: str, stripe: int) -> subprocess.Popen[str]:
    """Start a process that holds the record lock on byte ``stripe`` of ``path`` (30 s)."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, path, str(stripe)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline() == "held\n"
    return child


HOLD_UNTIL_TOLD = textwrap.dedent(
    """
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR)
    fcntl.lockf(fd, fcntl.LOCK_EX, 1, int(sys.argv[2]))
    print("held", flush=True)
    sys.stdin.readline()
    fcntl.lockf(fd, fcntl.LOCK_UN, 1, int(sys.argv[2]))
    print("released", flush=True)
    time.sleep(30)
    """
)


def hold_stripe_until_told(path: str, stripe: int) -> subprocess.Popen[str]:
    """Like ``hold_stripe``, but the holder lets go when a line is written to its stdin."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD_UNTIL_TOLD, path, str(stripe)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline() == "held\n"
    return child
