"""Instructions a command runs, counted by valgrind's callgrind: repeatable on a busy box."""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path


def instructions(argv: list[str], cwd: Path | None = None) -> int:
    """Run ``argv`` under callgrind and return the instructions it ran, start-up included."""
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg.out", *argv],
            check=True,
            capture_output=True,
            text=True,
            cwd=cwd,
        )
    match = re.search(r"Collected : (\d+)", done.stderr)
    assert match, "no callgrind summary"
    return int(match.group(1))
