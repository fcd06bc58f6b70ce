"""The plain text tables printed at the end of a run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from proxybench.report import (
    BASELINE,
    Summary,
    against_baseline,
    compare,
    gate,
    gw_names,
    observability,
    ratio,
)
from proxybench.schedule import LATENCY_LEVEL, Plan, Sample

NOISY_CORES = 0.25


def _num(value: float | None, suffix: str = "") -> str:
    """Format a count or microseconds with thousands separators."""
    return "-" if value is None else f"{value:,.0f}{suffix}"


def _signed(value: float | None) -> str:
    """Format an added latency with its sign."""
    return "-" if value is None else f"{value:+,.0f}"


def _times(value: float | None) -> str:
    """Format a ratio."""
    return "-" if value is None else f"{value:.2f}x"


def _cpu(median: float | None, low: float | None, high: float | None) -> str:
    """Format median CPU per request with its range over runs."""
    if median is None or low is None or high is None:
        return "-"
    return f"{median:,.0f} ({low:,.0f}-{high:,.0f})"


def _grid(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Align columns: the first to the left, the others to the right."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = []
    for row in (header, *rows):
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells))
    return lines


def main_table(summaries: Sequence[Summary], plan: Plan) -> list[str]:
    """Return the per-target table: medians of rounds and ratios to direct."""
    low, levels = plan.loads[0], plan.loads
    base = next((s for s in summaries if s.name == BASELINE), None)
    header = [
        "target",
        "procs",
        *(f"req/s@{c}" for c in levels),
        f"p50@{low} µs",
        f"p99@{low} µs",
        f"+p50@{LATENCY_LEVEL} µs",
        "CPU µs/req (range)",
        "1 worker µs/req",
        *(f"x direct@{c}" for c in levels),
        "other load",
    ]
    rows = [
        [
            s.name,
            str(s.processes),
            *(_num(s.rps[c]) for c in levels),
            _num(s.p50_us[low]),
            _num(s.p99_us[low]),
            _signed(s.added_p50_us),
            _cpu(s.cpu_us, s.cpu_us_min, s.cpu_us_max),
            _cpu(s.worker_cpu_us, s.worker_cpu_us_min, s.worker_cpu_us_max),
            *(_times(ratio(s.rps[c], base.rps[c] if base else None)) for c in levels),
            f"{s.other_cores:.2f}",
        ]
        for s in summaries
    ]
    return _grid(header, rows)


def gw_table(summaries: Sequence[Summary], plan: Plan) -> list[str]:
    """Return every gw row as ratios to every peer but direct."""
    by_name = {s.name: s for s in summaries}
    low = plan.loads[0]
    header = [
        "ratio",
        *(f"req/s@{c}" for c in plan.loads),
        f"p50@{low}",
        f"+p50@{LATENCY_LEVEL}",
        "CPU/req",
    ]
    rows = []
    for gw in gw_names(summaries):
        for peer in summaries:
            if peer.name in (gw, BASELINE):
                continue
            found = compare(by_name[gw], peer, plan)
            keys = [f"rps_{c}" for c in plan.loads]
            keys += [f"p50_us_{low}", "added_p50_us_1", "cpu_us_per_request"]
            rows.append([f"{gw} / {peer.name}", *(_times(found[k]) for k in keys)])
    return _grid(header, rows) if rows else []


def matrix(summaries: Sequence[Summary], connections: str) -> list[str]:
    """Return the req/s ratio of every target (row) to every other (column)."""
    header = [f"req/s@{connections}: row / column", *(s.name for s in summaries)]
    rows = [
        [
            row.name,
            *(_times(ratio(row.rps[connections], col.rps[connections])) for col in summaries),
        ]
        for row in summaries
    ]
    return _grid(header, rows)


def gate_lines(summaries: Sequence[Summary], plan: Plan) -> list[str]:
    """Return one verdict line per gw row for the 0.6x-Express-cluster floor."""
    lines = []
    for name, verdict in gate(summaries, plan).items():
        shown = ", ".join(f"{_times(v)} at {c}" for c, v in verdict["ratios"].items())
        word = "PASS" if verdict["pass"] else "FAIL"
        lines.append(
            f"gate: {name} req/s >= {verdict['floor']}x {verdict['vs']} at every level: "
            f"{word} ({shown})"
        )
    return lines


def warnings(summaries: Sequence[Summary]) -> list[str]:
    """Return a warning for each target that had failed requests in any run."""
    return [
        f"WARNING: {s.name} had {s.worst_error_ratio:.2%} failed requests in its worst run"
        for s in summaries
        if s.worst_error_ratio > 0
    ]


def noise_lines(summaries: Sequence[Summary]) -> list[str]:
    """Return a warning when other work on the box took a noticeable share of the cores."""
    worst = max(summaries, key=lambda s: s.other_cores, default=None)
    if worst is None or worst.other_cores < NOISY_CORES:
        return []
    return [
        f"WARNING: other work on the box used a median {worst.other_cores:.2f} cores during "
        f"{worst.name}'s runs (column 'other load'): absolute figures are low, compare ratios"
    ]


def observability_lines(samples: Sequence[Sample], plan: Plan) -> list[str]:
    """Return one line per gw row with a dark twin: what observability costs it, paired."""
    return _paired_lines("observability", observability(samples, plan))


def baseline_lines(samples: Sequence[Sample], plan: Plan) -> list[str]:
    """Return one line per gw row with a baseline twin: what the change did to it, paired."""
    return _paired_lines("against the baseline", against_baseline(samples, plan))


def _paired_lines(what: str, found: dict[str, dict[str, Any]]) -> list[str]:
    return [
        f"{what}: {name} - {pair['vs']}: {pair['median_us']:+.1f} µs per request, the "
        f"median of {pair['pairs']} paired runs (same round and level"
        f"{', loaded together' if pair.get('together') else ''}; "
        f"{pair['min_us']:+.1f} to {pair['max_us']:+.1f}; {pair['lower']} below zero)"
        for name, pair in found.items()
    ]


def render(
    summaries: Sequence[Summary],
    plan: Plan,
    machine: dict[str, Any],
    samples: Sequence[Sample] = (),
) -> str:
    """Return the whole text report (``samples``: for the paired observability lines)."""
    title = (
        f"proxy benchmark: {plan.rounds} interleaved round(s) x {plan.duration:g}s per run, "
        f"medians; {machine.get('nproc')} cores, load generator + proxy + upstream on the "
        "same box"
    )
    if plan.per_worker:
        title += "\nreq/s@N/w: N wrk connections per worker of the target (N x workers in all)"
    parts = [[title, ""], main_table(summaries, plan)]
    if gw_names(summaries):
        parts.append(["", *gw_table(summaries, plan)])
    parts.append(["", *matrix(summaries, plan.loads[-1])])
    paired = [*observability_lines(samples, plan), *baseline_lines(samples, plan)]
    parts.append(["", *gate_lines(summaries, plan), *paired])
    parts.append([*warnings(summaries), *noise_lines(summaries)])
    return "\n".join(line for part in parts for line in part).rstrip() + "\n"
