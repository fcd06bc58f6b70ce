"""wrk output parsing and command lines."""

from __future__ import annotations

from pathlib import Path

import pytest
from proxybench import load

WRK_OUTPUT = """Running 2s test @ http://127.0.0.1:18080/api/x
  2 threads and 16 connections
  228571 requests in 2.01s, 39.45MB read
Requests/sec: 113991.57
WRKJSON {"requests":228571,"duration_us":2000000,"bytes":41371351,"connect":0,"read":2,\
"write":0,"status":571,"timeout":1,"p50_us":53.0,"p90_us":2697.0,"p99_us":6458.0,\
"mean_us":734.6,"max_us":13288.0}
"""


def test_parse_reads_the_script_line() -> None:
    result = load.parse(WRK_OUTPUT, connections=16)
    assert result.requests == 228571
    assert result.duration_s == 2.0
    assert (result.p50_us, result.p90_us, result.p99_us) == (53.0, 2697.0, 6458.0)
    assert result.socket_errors == 3


def test_rate_counts_only_successful_responses() -> None:
    result = load.parse(WRK_OUTPUT, connections=16)
    assert result.ok_requests == 228000
    assert result.rps == 114000.0
    assert result.error_ratio == pytest.approx((571 + 3) / (228571 + 3))


def test_parse_without_the_script_line_fails_loudly() -> None:
    with pytest.raises(load.LoadFailed, match="no WRKJSON line"):
        load.parse("Running 2s test\nconnection refused\n", connections=16)


def test_one_connection_runs_one_thread() -> None:
    argv = load.command("http://127.0.0.1:1/api/bench", 1, 2.0, Path("s.lua"))
    assert "-t1" in argv and "-c1" in argv and "-d2s" in argv and "--latency" in argv


def test_many_connections_run_two_threads() -> None:
    argv = load.command("http://127.0.0.1:1/api/bench", 64, 5.0, Path("s.lua"))
    assert "-t2" in argv and "-c64" in argv
