"""Interleaved rounds: every target once per round and load level, in a rotating order."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from proxybench import load
from proxybench.load import LoadFailed
from proxybench.procs import (
    ChildFailed,
    fetch,
    machine_busy_seconds,
    tree_cpu_seconds,
    wait_for_quiet,
)
from proxybench.targets import PATH, Target
from proxybench.workers import WorkerProbe, delta

T = TypeVar("T")
LATENCY_CONNECTIONS = 1
LATENCY_LEVEL = str(LATENCY_CONNECTIONS)
PER_WORKER = "/w"


@dataclass(frozen=True)
class Plan:
    """How long and how often to measure."""

    rounds: int = 3
    duration: float = 5.0
    warmup: float = 2.0
    throughput: tuple[int, ...] = (16, 64)
    script: Path = Path("configs/wrk-auth.lua")
    quiet_wait: float = 0.0  # before each run, wait up to this long for the box to go idle
    per_worker: bool = False  # throughput counts are per worker: connections = N x workers

    @property
    def loads(self) -> tuple[str, ...]:
        """Return the labels of the throughput levels: "16", or "8/w" for 8 per worker."""
        suffix = PER_WORKER if self.per_worker else ""
        return tuple(f"{n}{suffix}" for n in self.throughput)

    @property
    def levels(self) -> tuple[str, ...]:
        """Return every level's label, the 1-connection latency run ("1") last."""
        return (*self.loads, LATENCY_LEVEL)

    def connections(self, level: str, workers: int) -> int:
        """Return wrk's connection count for ``level`` on a target with ``workers`` workers."""
        if level.endswith(PER_WORKER):
            return int(level.removesuffix(PER_WORKER)) * workers
        return int(level)

    def estimate_seconds(self, targets: int) -> float:
        """Return roughly how long the measurement takes (excluding start-up)."""
        runs = self.rounds * len(self.levels) * targets
        return runs * (self.duration + 0.7) + targets * (self.warmup + 0.5)


@dataclass(frozen=True)
class Sample:
    """One wrk run against one target, with the CPU its processes used meanwhile."""

    target: str
    round: int
    position: int
    load: load.LoadResult
    cpu_s: float
    upstream_cpu_s: float
    other_cpu_s: float = 0.0  # busy CPU on the box not charged to target, upstream or wrk
    level: str = ""  # the plan's level label ("16", "8/w"); "" means str(connections)
    worker_cpu_s: float | None = None  # one worker's own CPU during the run (workers.py)
    worker_requests: int | None = None  # the requests that worker served meanwhile
    together: bool = False  # loaded at the same time as its twin (run_rounds): for the pair only

    @property
    def label(self) -> str:
        """Return the level this run belongs to."""
        return self.level or str(self.load.connections)

    @property
    def cpu_us_per_request(self) -> float | None:
        """Return the target's CPU microseconds per completed response."""
        return self.cpu_s * 1e6 / self.load.requests if self.load.requests else None

    @property
    def worker_cpu_us_per_request(self) -> float | None:
        """Return one worker's CPU microseconds per request it served, if that is known."""
        if self.worker_cpu_s is None or not self.worker_requests:
            return None
        return self.worker_cpu_s * 1e6 / self.worker_requests

    def to_dict(self) -> dict[str, Any]:
        """Return the raw numbers as a JSON-ready dict."""
        per_request, per_worker = self.cpu_us_per_request, self.worker_cpu_us_per_request
        return {
            "target": self.target,
            "round": self.round,
            "position": self.position,
            "level": self.label,
            "cpu_s": round(self.cpu_s, 3),
            "upstream_cpu_s": round(self.upstream_cpu_s, 3),
            "other_cpu_s": round(self.other_cpu_s, 3),
            "cpu_us_per_request": None if per_request is None else round(per_request, 1),
            "worker_cpu_s": None if self.worker_cpu_s is None else round(self.worker_cpu_s, 3),
            "worker_requests": self.worker_requests,
            "worker_cpu_us_per_request": None if per_worker is None else round(per_worker, 1),
            "together": self.together,
            **self.load.to_dict(),
        }


def rotate(items: Sequence[T], shift: int) -> list[T]:
    """Return ``items`` rotated left by ``shift`` places."""
    if not items:
        return []
    shift %= len(items)
    return [*items[shift:], *items[:shift]]


def measure(
    target: Target,
    upstream: Target,
    level: str,
    plan: Plan,
    probe: WorkerProbe | None = None,
) -> Sample:
    """Load ``target`` once and charge it the CPU its process tree used meanwhile.

    With a ``probe``, also the CPU one worker used and the requests that worker served.

    Raises:
        ChildFailed: the target died before or during the run.
        LoadFailed: a target that needs credentials (gw-full) answered anything but 2xx/3xx.
    """
    return measure_together([target], upstream, level, plan, [probe])[0]


def measure_together(
    group: Sequence[Target],
    upstream: Target,
    level: str,
    plan: Plan,
    probes: Sequence[WorkerProbe | None],
) -> list[Sample]:
    """Load every target of ``group`` at the same time, each with its own wrk at ``level``'s
    connections, and charge each the CPU its own process tree used meanwhile (``measure``: a
    group of one). Samples of a group of two or more are marked ``together``.

    What it is for (``run_rounds``, ``--gw-dark-together``): twins loaded at once meet the same
    moments of the machine's speed. Tried on observability (bench/README.md, the twenty-sixth
    run), it took a quarter off the pairs' spread, and measured a harsher condition than a run
    alone (two trees on two cores: every worker preempted more often).

    Raises:
        ChildFailed: a target died before or during the run.
        LoadFailed: a target that needs credentials (gw-full) answered anything but 2xx/3xx.
    """
    for target in group:
        _check_alive(target)
    workers0 = [probe.snapshot() if probe else None for probe in probes]
    busy0 = machine_busy_seconds()
    cpu0 = [tree_cpu_seconds(target.child.pid) for target in group]
    up0 = tree_cpu_seconds(upstream.child.pid)
    runs = [
        load.start(t.url, plan.connections(level, t.workers), plan.duration, plan.script, t.tokens)
        for t in group
    ]
    results = _finished(runs)
    cpu = [tree_cpu_seconds(t.child.pid) - before for t, before in zip(group, cpu0, strict=True)]
    up = tree_cpu_seconds(upstream.child.pid) - up0
    busy = machine_busy_seconds() - busy0
    workers = [
        delta(before, probe.snapshot() if probe else None)
        for before, probe in zip(workers0, probes, strict=True)
    ]
    for target, result in zip(group, results, strict=True):
        _check_alive(target)
        _check_admitted(target, result)
    shared_upstream = any(upstream.child is target.child for target in group)
    ours = sum(cpu) + sum(r.loadgen_cpu_s for r in results) + (0.0 if shared_upstream else up)
    return [
        Sample(
            target.name,
            -1,
            -1,
            result,
            own,
            up,
            max(0.0, busy - ours),
            level,
            worker_cpu,
            worker_requests,
            together=len(group) > 1,
        )
        for target, result, own, (worker_cpu, worker_requests) in zip(
            group, results, cpu, workers, strict=True
        )
    ]


def _finished(runs: Sequence[load.Running]) -> list[load.LoadResult]:
    """Wait for every run (none is left running); raise the first failure."""
    results, failures = [], []
    for run in runs:
        try:
            results.append(run.finish()[0])
        except LoadFailed as ex:
            failures.append(ex)
    if failures:
        raise failures[0]
    return results


def _check_admitted(target: Target, result: load.LoadResult) -> None:
    """Raise LoadFailed if a row that sends tokens got any non-2xx/3xx answer.

    A full-pipeline row whose requests are refused (401, 429) would measure the refusal.
    """
    if not target.tokens or not result.non_2xx:
        return
    try:
        status, body = fetch(target.port, PATH, target.auth_headers())
        sample = f"now it answers {status} {body[:200]!r}"
    except OSError as ex:
        sample = f"now it does not answer: {ex!r}"
    raise LoadFailed(
        f"{target.name}: {result.non_2xx} of {result.requests} responses at "
        f"{result.connections} connections were not 2xx/3xx ({sample})"
    )


def _check_alive(target: Target) -> None:
    """Raise ChildFailed if the target's leading process has exited."""
    if not target.child.alive():
        raise ChildFailed(f"{target.name} died:\n{target.child.log_tail()}")


def warm_up(targets: Sequence[Target], upstream: Target, plan: Plan) -> None:
    """Load every target briefly so that pools, caches and JITs are warm; keep no result."""
    if plan.warmup <= 0:
        return
    warm = replace(plan, rounds=1, duration=plan.warmup, warmup=0, quiet_wait=0.0)
    level = warm.loads[plan.throughput.index(max(plan.throughput))]
    for target in targets:
        measure(target, upstream, level, warm)


def run_rounds(
    targets: Sequence[Target],
    upstream: Target,
    plan: Plan,
    report: Callable[[str], None] = print,
    together: Mapping[str, str] | None = None,
) -> list[Sample]:
    """Measure every target at every level, ``plan.rounds`` times, interleaved.

    Each round runs the levels in turn and, within a level, every target once; the target order
    rotates by one place each round so that drift (heat, neighbours, page cache) hits all alike.

    ``together`` maps a target to the row it is measured with (a dark twin to its gw row): in
    its place in the order, at each loaded level (not at the latency level), it and that row
    are loaded at the same time (``measure_together``), in a run of the row's besides its own.
    """
    together = together or {}
    by_name = {target.name: target for target in targets}
    samples: list[Sample] = []
    probes = {target.name: WorkerProbe.for_target(target) for target in targets}
    for round_no in range(plan.rounds):
        order = rotate(targets, round_no)
        for level in plan.levels:
            for position, target in enumerate(order):
                row = together.get(target.name)
                if row is not None and level == LATENCY_LEVEL:
                    continue
                wait_for_quiet(plan.quiet_wait)
                if row is None:
                    found = [measure(target, upstream, level, plan, probes[target.name])]
                else:
                    group = [by_name[row], target]
                    found = measure_together(group, upstream, level, plan, [None, None])
                for sample in found:
                    sample = replace(sample, round=round_no, position=position)
                    samples.append(sample)
                    report(_progress(sample, plan))
    return samples


def _progress(sample: Sample, plan: Plan) -> str:
    """Return one progress line for a finished run."""
    cpu, worker = sample.cpu_us_per_request, sample.worker_cpu_us_per_request
    cpu_text = "-" if cpu is None else f"{cpu:.0f} us/req"
    cpu_text += "" if worker is None else f" (1 worker {worker:.0f})"
    errors = f"  ERRORS {sample.load.error_ratio:.1%}" if sample.load.error_ratio else ""
    other = sample.other_cpu_s / sample.load.duration_s if sample.load.duration_s else 0.0
    errors += "  (with its twin)" if sample.together else ""
    return (
        f"round {sample.round + 1}/{plan.rounds}  c={sample.load.connections:<3} "
        f"{sample.target:<20} {sample.load.rps:>10,.0f} req/s  p50 {sample.load.p50_us:>8,.0f} us"
        f"  p99 {sample.load.p99_us:>8,.0f} us  cpu {cpu_text}  other {other:.2f} cores{errors}"
    )
