"""The load generator: wrk runs with the Authorization-header script, and their results."""

from __future__ import annotations

import json
import resource
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MARKER = "WRKJSON "


class LoadFailed(RuntimeError):
    """wrk did not run, or printed no result."""


@dataclass(frozen=True)
class LoadResult:
    """What one wrk run measured (latencies in microseconds)."""

    connections: int
    duration_s: float
    requests: int
    non_2xx: int
    socket_errors: int
    p50_us: float
    p90_us: float
    p99_us: float
    mean_us: float
    max_us: float
    loadgen_cpu_s: float = 0.0

    @property
    def ok_requests(self) -> int:
        """Return the responses with a 2xx or 3xx status."""
        return self.requests - self.non_2xx

    @property
    def rps(self) -> float:
        """Return successful responses per second."""
        return self.ok_requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def error_ratio(self) -> float:
        """Return the share of attempts that failed (non-2xx/3xx or socket error)."""
        attempts = self.requests + self.socket_errors
        return (self.non_2xx + self.socket_errors) / attempts if attempts else 1.0

    def to_dict(self) -> dict[str, Any]:
        """Return the raw numbers and the derived rate as a JSON-ready dict."""
        return {**asdict(self), "rps": round(self.rps, 1), "ok_requests": self.ok_requests}


def parse(output: str, connections: int) -> LoadResult:
    """Parse the marker line that the wrk script's ``done()`` prints.

    Raises:
        LoadFailed: the output holds no marker line.
    """
    for line in output.splitlines():
        if line.startswith(MARKER):
            return _result(json.loads(line[len(MARKER) :]), connections)
    raise LoadFailed(f"no {MARKER.strip()} line in wrk output:\n{output[-2000:]}")


def _result(raw: dict[str, float], connections: int) -> LoadResult:
    """Build a LoadResult from the script's JSON fields."""
    sockets = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    return LoadResult(
        connections=connections,
        duration_s=raw["duration_us"] / 1e6,
        requests=int(raw["requests"]),
        non_2xx=int(raw["status"]),
        socket_errors=int(sockets),
        p50_us=raw["p50_us"],
        p90_us=raw["p90_us"],
        p99_us=raw["p99_us"],
        mean_us=raw["mean_us"],
        max_us=raw["max_us"],
    )


def command(
    url: str, connections: int, duration: float, script: Path, args: Sequence[str] = ()
) -> list[str]:
    """Return the wrk command line for one run (one thread per connection, at most two).

    ``args`` go to the script's ``init`` after the URL (the bearer tokens of gw-full rows).
    """
    threads = min(2, connections)
    return [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(script),
        url,
        *args,
    ]


def run(
    url: str, connections: int, duration: float, script: Path, args: Sequence[str] = ()
) -> tuple[LoadResult, str]:
    """Run wrk once against ``url``, bounded in time, and return its result and raw output.

    Raises:
        LoadFailed: wrk failed, hung, or printed no result.
    """
    before = _children_cpu()
    try:
        done = subprocess.run(
            command(url, connections, duration, script, args),
            capture_output=True,
            text=True,
            timeout=duration + 30,
            check=False,
        )
    except subprocess.TimeoutExpired as ex:
        raise LoadFailed(f"wrk did not finish within {duration + 30:.0f}s") from ex
    if done.returncode != 0:
        raise LoadFailed(f"wrk exited {done.returncode}: {done.stderr.strip()[-500:]}")
    result = parse(done.stdout, connections)
    cpu = round(_children_cpu() - before, 3)
    return LoadResult(**{**asdict(result), "loadgen_cpu_s": cpu}), done.stdout


def _children_cpu() -> float:
    """Return the CPU seconds used so far by this process's reaped children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
