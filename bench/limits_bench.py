#!/usr/bin/env python3
"""Benchmark the rate limiters: cost per decision and accuracy under multi-process load.

Usage: python -m bench.limits_bench [--quick] [--redis-url URL] [--output PATH]
   or: python bench/limits_bench.py ...

Part 1, cost: every check is timed on its own (perf_counter_ns, the timer's own cost
subtracted); median and p99 wall microseconds per check, CPU microseconds per check, and
checks per second (all processes together). Backends: the shared mmap table in one process,
the same table with 4 processes contending for one key or spread over 1000 keys (latency
figures are per process: each check as its process saw it), Redis through EVALSHA, and a
naive per-process dict.

Part 2, accuracy: 4 processes x 2 threads hammer one key limited to L per minute for a
bounded time; the admitted count is compared with what the limit allows (L plus refill).
The naive dict, one per process, admits about 4 times that.

Redis: uses --redis-url, else starts a throwaway redis-server on 127.0.0.1 if installed.
Prints plain-text tables and writes bench/results/limits.json.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import uuid
from array import array
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make gw and tests importable
    sys.path.insert(0, str(ROOT))

from gw.limits import Limiter, LimiterUnavailable, Rate  # noqa: E402
from gw.limits.local import LocalLimiter  # noqa: E402
from gw.limits.table import SharedTable  # noqa: E402

FORK = multiprocessing.get_context("fork")
DEFAULT_OUTPUT = ROOT / "bench" / "results" / "limits.json"
PROCESSES = 4
THREADS = 2
REDIS_TIMEOUT = 0.25  # generous: this measures cost and exactness, not the fail-fast path
UNLIMITED = Rate(10**9, 1)  # never denies: every check does the full work of an admission


@dataclass
class Cost:
    """Per-check cost of one backend in one setting."""

    backend: str
    setting: str
    checks: int
    median_us: float
    p99_us: float
    cpu_us: float
    per_second: int
    unavailable: int = 0


@dataclass
class Accuracy:
    """Admissions of one backend for one key hammered by several processes."""

    backend: str
    admitted: int
    allowed_low: int
    allowed_high: int
    seconds: float
    checks: int
    unavailable: int


# ---------------------------------------------------------------- backends


@dataclass
class Backend:
    """How to build a limiter of one kind in any process (after a fork)."""

    name: str
    make: Callable[[], Limiter]
    shared: bool  # one bucket for every process, or one per process


def table_backend(directory: str) -> Backend:
    """Create a fresh shared table and return a backend that opens it."""
    path = os.path.join(directory, f"limits-{uuid.uuid4().hex[:8]}.table")
    SharedTable.create(path)
    return Backend("mmap table", lambda: SharedTable.open(path, deadline=1.0), True)


def redis_backend(url: str) -> Backend:
    """Return a backend on a fresh key prefix of the Redis at ``url``."""
    from gw.limits.redis_backend import RedisLimiter

    prefix = f"gw:bench:{uuid.uuid4().hex[:8]}:"
    return Backend("redis", lambda: RedisLimiter(url, timeout=REDIS_TIMEOUT, prefix=prefix), True)


def local_backend() -> Backend:
    """Return the naive per-process dict backend."""
    return Backend("naive dict", LocalLimiter, False)


@contextmanager
def redis_url(given: str | None) -> Iterator[str | None]:
    """Yield ``given``, or the URL of a throwaway redis-server, or None without one."""
    if given:
        yield given
        return
    from tests.fixtures.redis_server import RedisServer, redis_server_binary

    if redis_server_binary() is None:
        yield None
        return
    with RedisServer() as server:
        yield server.url


# ---------------------------------------------------------------- part 1: cost


def timer_overhead() -> int:
    """Return the median cost of an empty perf_counter_ns pair, in nanoseconds."""
    clock = time.perf_counter_ns
    samples = array("q")
    for _ in range(20_000):
        start = clock()
        samples.append(clock() - start)
    return int(statistics.median(samples))


class Checker(Protocol):
    """What ``time_checks`` times: a limiter, or a stand-in that has only ``check``."""

    def check(self, key: str, rate: Rate, cost: int = 1) -> Any:
        """Decide one request."""
        ...


def time_checks(limiter: Checker, keys: Sequence[str], count: int, stop_at: int) -> Any:
    """Time ``count`` checks (or until ``stop_at``) one by one; return samples and stats."""
    clock, check = time.perf_counter_ns, limiter.check
    samples, unavailable = array("q"), 0
    cpu_start, wall_start = time.process_time_ns(), time.monotonic_ns()
    for i in range(count):
        key = keys[i % len(keys)]
        start = clock()
        try:
            check(key, UNLIMITED)
        except LimiterUnavailable:
            unavailable += 1
        samples.append(clock() - start)
        if not i % 256 and time.monotonic_ns() > stop_at:
            break
    wall = time.monotonic_ns() - wall_start
    return samples, time.process_time_ns() - cpu_start, unavailable, wall


def summarize(backend: str, setting: str, runs: list[Any], overhead: int) -> Cost:
    """Fold the samples of one or more processes into one Cost row."""
    samples = sorted(s - overhead for run in runs for s in run[0])
    checks = len(samples)
    return Cost(
        backend=backend,
        setting=setting,
        checks=checks,
        median_us=samples[checks // 2] / 1000,
        p99_us=samples[min(checks - 1, int(checks * 0.99))] / 1000,
        cpu_us=sum(run[1] for run in runs) / checks / 1000,
        per_second=int(checks / (max(run[3] for run in runs) / 1e9)),
        unavailable=sum(run[2] for run in runs),
    )


def cost_alone(backend: Backend, count: int, seconds: float, overhead: int) -> Cost:
    """Measure one process checking one key, after a warm-up."""
    limiter = backend.make()
    time_checks(limiter, ["k"], min(count // 10, 2000), time.monotonic_ns() + 10**9)
    run = time_checks(limiter, ["k"], count, time.monotonic_ns() + int(seconds * 1e9))
    return summarize(backend.name, "1 process", [run], overhead)


class _ThreeLimits:
    """One request under three limits (address, user, API key), as admission asks for it:
    ``together`` decides them in one check_all, else three checks one after another (the
    baseline: what the same work costs without the all-or-nothing decision)."""

    def __init__(self, limiter: Limiter, together: bool) -> None:
        self._limiter = limiter
        self._together = together

    def check(self, key: str, rate: Rate, cost: int = 1) -> Any:
        buckets = [(f"ip|{key}", rate), (f"user|{key}", rate), (f"api|{key}", rate)]
        if self._together:
            return self._limiter.check_all(buckets, cost)
        return [self._limiter.check(k, r, cost) for k, r in buckets]


def cost_of_three_limits(backend: Backend, count: int, seconds: float, overhead: int) -> list[Cost]:
    """Measure one request under three limits, decided together and one by one."""
    rows = []
    for together, setting in ((False, "3 limits, 3 checks"), (True, "3 limits, check_all")):
        limiter = _ThreeLimits(backend.make(), together)
        time_checks(limiter, ["k"], min(count // 10, 2000), time.monotonic_ns() + 10**9)
        run = time_checks(limiter, ["k"], count, time.monotonic_ns() + int(seconds * 1e9))
        rows.append(summarize(backend.name, setting, [run], overhead))
    return rows


class _LockPair:
    """The floor under the table: one fcntl lock and unlock, the two syscalls of a check."""

    def __init__(self, directory: str) -> None:
        self._fd = os.open(os.path.join(directory, "floor.lock"), os.O_RDWR | os.O_CREAT, 0o600)

    def check(self, key: str, rate: Rate, cost: int = 1) -> Any:
        fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
        fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, 0)


def cost_floor(directory: str, count: int, overhead: int) -> Cost:
    """Measure the two record-lock syscalls alone, for reference."""
    run = time_checks(_LockPair(directory), ["k"], count, time.monotonic_ns() + 10**10)
    return summarize("fcntl floor", "lock + unlock only", [run], overhead)


def _cost_child(
    backend: Backend, keys: list[str], go_at: int, stop_at: int, out: Connection
) -> None:
    """In a forked process: open the backend, wait for the start, time checks until stop."""
    limiter = backend.make()
    time_checks(limiter, keys, 1000, stop_at)  # warm up, open connections
    time.sleep(max(0, go_at - time.monotonic_ns()) / 1e9)
    out.send(time_checks(limiter, keys, 10**9, stop_at))
    out.close()


def cost_contended(
    backend: Backend, keys: list[str], setting: str, seconds: float, overhead: int
) -> Cost:
    """Measure PROCESSES processes checking ``keys`` at once; figures are per process."""
    go_at = time.monotonic_ns() + 500_000_000
    stop_at = go_at + int(seconds * 1e9)
    runs = run_children(_cost_child, (backend, keys, go_at, stop_at))
    return summarize(backend.name, setting, runs, overhead)


def run_children(target: Callable[..., None], args: tuple[Any, ...]) -> list[Any]:
    """Run PROCESSES forked children of ``target(*args, pipe)``; return what each sent."""
    pipes, children = [], []
    for _ in range(PROCESSES):
        reader, writer = FORK.Pipe(duplex=False)
        child = FORK.Process(target=target, args=(*args, writer))
        child.start()
        writer.close()
        pipes.append(reader)
        children.append(child)
    results = [reader.recv() for reader in pipes if reader.poll(120)]
    for child in children:
        child.join(10)
    if len(results) != PROCESSES:
        raise RuntimeError("a benchmark child failed")
    return results


# ---------------------------------------------------------------- part 2: accuracy


@dataclass
class Tally:
    """One hammering thread's counts, with clock brackets around its first and last check."""

    admitted: int = 0
    checks: int = 0
    unavailable: int = 0
    first: tuple[int, int] = (0, 0)
    last: tuple[int, int] = (0, 0)


def _hammer(limiter: Limiter, rate: Rate, stop_at: int) -> Tally:
    """Check one key as fast as possible until ``stop_at``."""
    tally = Tally()
    while (start := time.monotonic_ns()) < stop_at:
        try:
            tally.admitted += limiter.check("hot", rate).allowed
        except LimiterUnavailable:
            tally.unavailable += 1
            continue
        tally.last = (start, time.monotonic_ns())
        tally.first = tally.first if tally.checks else tally.last
        tally.checks += 1
    return tally


def _accuracy_child(
    backend: Backend, rate: Rate, go_at: int, stop_at: int, out: Connection
) -> None:
    """In a forked process: hammer one key from THREADS threads; send their tallies."""
    limiter = backend.make()
    limiter.check("warm-up", rate)  # connect and load scripts before the clock starts
    tallies: list[Tally] = []
    time.sleep(max(0, go_at - time.monotonic_ns()) / 1e9)
    threads = [
        threading.Thread(target=lambda: tallies.append(_hammer(limiter, rate, stop_at)))
        for _ in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.send(tallies)
    out.close()


def accuracy(backend: Backend, rate: Rate, seconds: float) -> Accuracy:
    """Hammer one key from every process; compare admissions with what one bucket allows.

    The bucket allows ``burst + floor(window / T)`` for a key hammered nonstop, where the
    window runs from the first check to the last; the clock brackets around those checks
    give the fewest and most that may pass (they differ by one at most).
    """
    go_at = time.monotonic_ns() + 500_000_000
    stop_at = go_at + int(seconds * 1e9)
    tallies = [t for run in run_children(_accuracy_child, (backend, rate, go_at, stop_at))
               for t in run]  # fmt: skip
    first_low, first_high = min(t.first[0] for t in tallies), min(t.first[1] for t in tallies)
    last_low, last_high = max(t.last[0] for t in tallies), max(t.last[1] for t in tallies)
    return Accuracy(
        backend=backend.name,
        admitted=sum(t.admitted for t in tallies),
        allowed_low=rate.capacity + max(0, last_low - first_high) // rate.emission_ns,
        allowed_high=rate.capacity + (last_high - first_low) // rate.emission_ns,
        seconds=seconds,
        checks=sum(t.checks for t in tallies),
        unavailable=sum(t.unavailable for t in tallies),
    )


# ---------------------------------------------------------------- report


def print_costs(rows: list[Cost]) -> None:
    """Print the cost table."""
    print(f"\n{'backend':<12} {'setting':<20} {'checks':>8} {'median µs':>10} "
          f"{'p99 µs':>9} {'CPU µs':>7} {'checks/s':>9} {'unavail':>7}")  # fmt: skip
    for row in rows:
        print(f"{row.backend:<12} {row.setting:<20} {row.checks:>8} {row.median_us:>10.2f} "
              f"{row.p99_us:>9.2f} {row.cpu_us:>7.2f} {row.per_second:>9} "
              f"{row.unavailable:>7}")  # fmt: skip


def print_accuracy(rows: list[Accuracy], rate: Rate) -> None:
    """Print the accuracy table."""
    print(f"\none key, {rate.limit} per {rate.period:g} s, {PROCESSES} processes x {THREADS} "
          f"threads, {rows[0].seconds:g} s")  # fmt: skip
    print(f"{'backend':<12} {'admitted':>9} {'allowed':>12} {'ratio':>7} {'checks':>9} "
          f"{'unavail':>8}")  # fmt: skip
    for row in rows:
        allowed = f"{row.allowed_low}-{row.allowed_high}"
        ratio = row.admitted / row.allowed_low
        print(f"{row.backend:<12} {row.admitted:>9} {allowed:>12} {ratio:>7.2f} "
              f"{row.checks:>9} {row.unavailable:>8}")  # fmt: skip


def machine() -> dict[str, Any]:
    """Describe where the numbers come from."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_before": os.getloadavg(),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Return the command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (noisier)")
    parser.add_argument("--redis-url", help="use this Redis instead of starting one")
    parser.add_argument("--limit", type=int, default=1000, help="accuracy: L per minute")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    return parser.parse_args(argv)


def run(args: argparse.Namespace, url: str | None, directory: str) -> dict[str, Any]:
    """Run both parts and return the results."""
    seconds = 1.0 if args.quick else 2.0
    count = 50_000 if args.quick else 200_000
    overhead = timer_overhead()
    backends = [table_backend(directory), local_backend()]
    if url:
        backends.insert(1, redis_backend(url))
    costs = [cost_alone(b, count // (20 if b.name == "redis" else 1), seconds * 2, overhead)
             for b in backends]  # fmt: skip
    costs.insert(1, cost_floor(directory, count, overhead))
    costs += cost_of_three_limits(table_backend(directory), count // 4, seconds, overhead)
    if url:
        costs += cost_of_three_limits(redis_backend(url), count // 40, seconds, overhead)
    table = table_backend(directory)
    costs.append(cost_contended(table, ["hot"], f"{PROCESSES} procs, one key", seconds, overhead))
    keys = [f"client-{i}" for i in range(1000)]
    costs.append(cost_contended(table, keys, f"{PROCESSES} procs, 1000 keys", seconds, overhead))
    if url:
        costs.append(cost_contended(redis_backend(url), ["hot"], f"{PROCESSES} procs, one key",
                                    seconds, overhead))  # fmt: skip
    rate = Rate(args.limit, 60)
    fresh = [table_backend(directory)] + ([redis_backend(url)] if url else []) + [local_backend()]
    accuracies = [accuracy(b, rate, seconds) for b in fresh]
    return {
        "timer_overhead_ns": overhead,
        "costs": [asdict(c) for c in costs],
        "accuracy": {"rate": [rate.limit, rate.period], "rows": [asdict(a) for a in accuracies]},
        "redis": "yes" if url else "skipped: no redis-server and no --redis-url",
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the tables and write the JSON results."""
    args = parse_args(argv)
    info = machine()
    with redis_url(args.redis_url) as url, tempfile.TemporaryDirectory(dir=_shm()) as directory:
        results = run(args, url, directory)
    results["machine"] = info
    print_costs([Cost(**row) for row in results["costs"]])
    print_accuracy([Accuracy(**row) for row in results["accuracy"]["rows"]],
                   Rate(args.limit, 60))  # fmt: skip
    if results["redis"] != "yes":
        print(f"\nredis {results['redis']}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    return 0


def _shm() -> str | None:
    """Return /dev/shm when it exists: the table lives on a memory file system in production."""
    return "/dev/shm" if os.path.isdir("/dev/shm") else None


if __name__ == "__main__":
    sys.exit(main())
