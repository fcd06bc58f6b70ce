"""The load generator: wrk runs with the Authorization-header script, and their results."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

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
    return start(url, connections, duration, script, args).finish()


def start(
    url: str, connections: int, duration: float, script: Path, args: Sequence[str] = ()
) -> Running:
    """Start one wrk run against ``url`` and return it; ``finish`` waits for its result."""
    return Running(command(url, connections, duration, script, args), connections, duration)


class Running:
    """One wrk run under way. Its own CPU is read when it is reaped (``wait4``), so two runs at
    once are each charged their own."""

    def __init__(self, argv: list[str], connections: int, duration: float) -> None:
        self.connections = connections
        self.limit = duration + 30
        self.deadline = time.monotonic() + self.limit
        # closed by finish(), which every caller runs
        self._out = tempfile.TemporaryFile()  # noqa: SIM115
        self._err = tempfile.TemporaryFile()  # noqa: SIM115
        self._proc = subprocess.Popen(argv, stdout=self._out, stderr=self._err)

    def finish(self) -> tuple[LoadResult, str]:
        """Wait for the run, bounded in time; return its result and raw output.

        Raises:
            LoadFailed: wrk failed, hung, or printed no result.
        """
        try:
            returncode, cpu = self._reaped()
            stdout, stderr = self._read(self._out), self._read(self._err)
        finally:
            self._out.close()
            self._err.close()
        if returncode != 0:
            raise LoadFailed(f"wrk exited {returncode}: {stderr.strip()[-500:]}")
        result = parse(stdout, self.connections)
        return LoadResult(**{**asdict(result), "loadgen_cpu_s": round(cpu, 3)}), stdout

    def _reaped(self) -> tuple[int, float]:
        """Return wrk's exit code and CPU seconds once it has exited; kill it at the deadline,
        or when this wait is interrupted (Ctrl-C)."""
        try:
            while True:
                pid, status, usage = os.wait4(self._proc.pid, os.WNOHANG)
                if pid:
                    self._proc.returncode = os.waitstatus_to_exitcode(status)
                    return self._proc.returncode, usage.ru_utime + usage.ru_stime
                if time.monotonic() > self.deadline:
                    raise LoadFailed(f"wrk did not finish within {self.limit:.0f}s")
                time.sleep(0.02)
        except BaseException:
            self._proc.kill()
            self._proc.wait()
            raise

    @staticmethod
    def _read(file: IO[bytes]) -> str:
        file.seek(0)
        return file.read().decode(errors="replace")
