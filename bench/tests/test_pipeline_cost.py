"""``pipeline_cost.py``'s in-process rows answer every request 200, through the edge too."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import BENCH_DIR


def run_row(row: str, *options: str) -> None:
    """Run one row in a child (it takes over the process's stdout); check it served 50
    requests (a row asserts a 200 for each: through the edge, in the answers the client read)
    and printed its cost."""
    script = str(BENCH_DIR / "pipeline_cost.py")
    done = subprocess.run(
        [sys.executable, script, "--row", row, "--requests", "50", "--inline-upstream", *options],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=BENCH_DIR.parent,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(rf"^{row}: \d+\.\d CPU µs/request$", done.stderr, re.M), done.stderr


@pytest.mark.parametrize("edge", [[], ["--edge"]], ids=["pipeline", "edge"])
@pytest.mark.parametrize("row", ["plain", "full"])
def test_a_row_serves_its_requests(row: str, edge: list[str]) -> None:
    run_row(row, *edge)


@pytest.mark.parametrize("stub", ["falcon", "wsgi"])
def test_the_edge_serves_a_stub_app(stub: str) -> None:
    run_row("full", "--edge", "--stub", stub)


@pytest.mark.parametrize("edge", [[], ["--edge"]], ids=["pipeline", "edge"])
def test_a_row_serves_its_requests_with_the_periodic_work_ticked(edge: list[str]) -> None:
    """``--tick-every``: the access log's and the metrics' periodic work runs between
    requests (every 10 here, so five times in the 50) and the requests are still answered."""
    run_row("full", "--tick-every", "10", *edge)


def test_trace_counts_bytecodes_calls_and_exceptions_per_request() -> None:
    """``--trace``: the per-request totals, the exceptions (none on this path) and the
    functions that ran the most bytecodes, gw's edge and pipeline among them."""
    script = str(BENCH_DIR / "pipeline_cost.py")
    options = ["--inline-upstream", "--edge", "--trace", "30"]
    done = subprocess.run(
        [sys.executable, script, "--row", "plain", "--requests", "20", *options],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=BENCH_DIR.parent,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    totals = re.search(
        r"^per request: ([\d,]+) bytecodes, ([\d.]+) Python calls, ([\d.]+) exceptions raised$",
        done.stderr,
        re.M,
    )
    assert totals, done.stderr
    assert int(totals[1].replace(",", "")) > 1000 and float(totals[2]) > 50
    assert float(totals[3]) == 0, done.stderr  # an exception on the path costs ~5,700
    assert re.search(r"^ +[\d.]+ +1\.00  gw/pipeline\.py:\d+ _forward$", done.stderr, re.M)
