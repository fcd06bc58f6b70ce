"""``pipeline_cost.py``'s in-process rows answer every request 200, through the edge too."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import BENCH_DIR


@pytest.mark.parametrize("edge", [[], ["--edge"]], ids=["pipeline", "edge"])
@pytest.mark.parametrize("row", ["plain", "full"])
def test_a_row_serves_its_requests(row: str, edge: list[str]) -> None:
    # A row asserts a 200 for every request (through the edge: in the answers the client read)
    # and prints its cost; it runs in a child, as it takes over the process's stdout.
    script = str(BENCH_DIR / "pipeline_cost.py")
    done = subprocess.run(
        [sys.executable, script, "--row", row, "--requests", "50", "--inline-upstream", *edge],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=BENCH_DIR.parent,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(rf"^{row}: \d+\.\d CPU µs/request$", done.stderr, re.M), done.stderr
