"""Interleaved rounds: every target once per round and load level, in a rotating order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from proxybench import load
from proxybench.procs import (
    ChildFailed,
    machine_busy_seconds,
    tree_cpu_seconds,
    wait_for_quiet,
)
from proxybench.targets import Target

T = TypeVar("T")
LATENCY_CONNECTIONS = 1


@dataclass(frozen=True)
class Plan:
    """How long and how often to measure."""

    rounds: int = 3
    duration: float = 5.0
    warmup: float = 2.0
    throughput: tuple[int, ...] = (16, 64)
    script: Path = Path("configs/wrk-auth.lua")
    quiet_wait: float = 0.0  # before each run, wait up to this long for the box to go idle

    @property
    def levels(self) -> tuple[int, ...]:
        """Return every connection count measured, the 1-connection latency run last."""
        return (*self.throughput, LATENCY_CONNECTIONS)

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

    @property
    def cpu_us_per_request(self) -> float | None:
        """Return the target's CPU microseconds per completed response."""
        return self.cpu_s * 1e6 / self.load.requests if self.load.requests else None

    def to_dict(self) -> dict[str, Any]:
        """Return the raw numbers as a JSON-ready dict."""
        per_request = self.cpu_us_per_request
        return {
            "target": self.target,
            "round": self.round,
            "position": self.position,
            "cpu_s": round(self.cpu_s, 3),
            "upstream_cpu_s": round(self.upstream_cpu_s, 3),
            "other_cpu_s": round(self.other_cpu_s, 3),
            "cpu_us_per_request": None if per_request is None else round(per_request, 1),
            **self.load.to_dict(),
        }


def rotate(items: Sequence[T], shift: int) -> list[T]:
    """Return ``items`` rotated left by ``shift`` places."""
    if not items:
        return []
    shift %= len(items)
    return [*items[shift:], *items[:shift]]


def measure(target: Target, upstream: Target, connections: int, plan: Plan) -> Sample:
    """Load ``target`` once and charge it the CPU its process tree used meanwhile.

    Raises:
        ChildFailed: the target died before or during the run.
    """
    _check_alive(target)
    busy0 = machine_busy_seconds()
    cpu0, up0 = tree_cpu_seconds(target.child.pid), tree_cpu_seconds(upstream.child.pid)
    result, _ = load.run(target.url, connections, plan.duration, plan.script)
    cpu1, up1 = tree_cpu_seconds(target.child.pid), tree_cpu_seconds(upstream.child.pid)
    busy = machine_busy_seconds() - busy0
    _check_alive(target)
    cpu, up = cpu1 - cpu0, up1 - up0
    ours = cpu + result.loadgen_cpu_s + (up if upstream.child is not target.child else 0.0)
    return Sample(target.name, -1, -1, result, cpu, up, max(0.0, busy - ours))


def _check_alive(target: Target) -> None:
    """Raise ChildFailed if the target's leading process has exited."""
    if not target.child.alive():
        raise ChildFailed(f"{target.name} died:\n{target.child.log_tail()}")


def warm_up(targets: Sequence[Target], upstream: Target, plan: Plan) -> None:
    """Load every target briefly so that pools, caches and JITs are warm; keep no result."""
    if plan.warmup <= 0:
        return
    warm = Plan(1, plan.warmup, 0, plan.throughput, plan.script, 0.0)
    for target in targets:
        measure(target, upstream, max(plan.throughput), warm)


def run_rounds(
    targets: Sequence[Target],
    upstream: Target,
    plan: Plan,
    report: Callable[[str], None] = print,
) -> list[Sample]:
    """Measure every target at every level, ``plan.rounds`` times, interleaved.

    Each round runs the levels in turn and, within a level, every target once; the target order
    rotates by one place each round so that drift (heat, neighbours, page cache) hits all alike.
    """
    samples: list[Sample] = []
    for round_no in range(plan.rounds):
        order = rotate(targets, round_no)
        for connections in plan.levels:
            for position, target in enumerate(order):
                wait_for_quiet(plan.quiet_wait)
                sample = measure(target, upstream, connections, plan)
                sample = replace(sample, round=round_no, position=position)
                samples.append(sample)
                report(_progress(sample, plan))
    return samples


def _progress(sample: Sample, plan: Plan) -> str:
    """Return one progress line for a finished run."""
    cpu = sample.cpu_us_per_request
    cpu_text = "-" if cpu is None else f"{cpu:.0f} us/req"
    errors = f"  ERRORS {sample.load.error_ratio:.1%}" if sample.load.error_ratio else ""
    other = sample.other_cpu_s / sample.load.duration_s if sample.load.duration_s else 0.0
    return (
        f"round {sample.round + 1}/{plan.rounds}  c={sample.load.connections:<3} "
        f"{sample.target:<20} {sample.load.rps:>10,.0f} req/s  p50 {sample.load.p50_us:>8,.0f} us"
        f"  p99 {sample.load.p99_us:>8,.0f} us  cpu {cpu_text}  other {other:.2f} cores{errors}"
    )
