"""Medians of rounds, ratios between targets, the text table and the JSON document."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from proxybench.schedule import LATENCY_LEVEL, Plan, Sample

BASELINE = "direct"
PEER_FOR_GATE = "express-cluster-2"
GATE_FLOOR = 0.6


@dataclass(frozen=True)
class Summary:
    """Medians over rounds for one target."""

    name: str
    processes: int
    rps: dict[str, float]  # by level label: "16", "64", "1", or "8/w" per worker
    p50_us: dict[str, float]
    p99_us: dict[str, float]
    added_p50_us: float | None
    cpu_us: float | None
    cpu_us_min: float | None
    cpu_us_max: float | None
    worst_error_ratio: float
    other_cores: float  # median busy cores on the box not charged to target, upstream or wrk
    worker_cpu_us: float | None = None  # one worker's CPU per request it served (median)
    worker_cpu_us_min: float | None = None
    worker_cpu_us_max: float | None = None


def _median(values: Iterable[float | None]) -> float | None:
    """Return the median of the values that are not None, or None if there are none."""
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def _runs(samples: Sequence[Sample], name: str, level: str, together: bool = False) -> list[Sample]:
    """Return the samples of one target at one level: its own runs, or (``together``) those it
    ran at the same time as its twin, which serve only the pair's difference."""
    return [s for s in samples if s.target == name and s.label == level and s.together == together]


def _level_median(samples: Sequence[Sample], name: str, level: str, field: str) -> float:
    """Return the median over rounds of one LoadResult attribute."""
    values = [getattr(s.load, field) for s in _runs(samples, name, level)]
    return _median(values) or 0.0


def added_p50(samples: Sequence[Sample], name: str) -> float | None:
    """Return the median, over rounds, of name's 1-connection p50 minus direct's in that round."""
    direct = {s.round: s.load.p50_us for s in _runs(samples, BASELINE, LATENCY_LEVEL)}
    deltas = [
        s.load.p50_us - direct[s.round]
        for s in _runs(samples, name, LATENCY_LEVEL)
        if s.round in direct
    ]
    return _median(deltas)


def summarize(samples: Sequence[Sample], plan: Plan, processes: dict[str, int]) -> list[Summary]:
    """Return one Summary per target with runs of its own, in the order the targets were given
    (a dark twin measured only together with its row has none)."""
    own = {s.target for s in samples if not s.together}
    return [_summary(samples, plan, name, n) for name, n in processes.items() if name in own]


def _summary(samples: Sequence[Sample], plan: Plan, name: str, processes: int) -> Summary:
    """Return the Summary of one target."""
    loaded = [s for c in plan.loads for s in _runs(samples, name, c)]
    known = [s.cpu_us_per_request for s in loaded if s.cpu_us_per_request is not None]
    worker = [s.worker_cpu_us_per_request for s in loaded]
    worker_known = [value for value in worker if value is not None]
    mine = [s for s in samples if s.target == name and not s.together]
    return Summary(
        name=name,
        processes=processes,
        rps={c: _level_median(samples, name, c, "rps") for c in plan.levels},
        p50_us={c: _level_median(samples, name, c, "p50_us") for c in plan.levels},
        p99_us={c: _level_median(samples, name, c, "p99_us") for c in plan.levels},
        added_p50_us=None if name == BASELINE else added_p50(samples, name),
        cpu_us=_median(known),
        cpu_us_min=min(known) if known else None,
        cpu_us_max=max(known) if known else None,
        worst_error_ratio=max((s.load.error_ratio for s in mine), default=0.0),
        other_cores=_median(s.other_cpu_s / s.load.duration_s for s in mine) or 0.0,
        worker_cpu_us=_median(worker_known),
        worker_cpu_us_min=min(worker_known) if worker_known else None,
        worker_cpu_us_max=max(worker_known) if worker_known else None,
    )


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """Return numerator / denominator, or None unless both are known and positive.

    An added latency can come out negative in a noisy round; its ratio would mean nothing.
    """
    if numerator is None or denominator is None or numerator <= 0 or denominator <= 0:
        return None
    return numerator / denominator


def compare(a: Summary, b: Summary, plan: Plan) -> dict[str, float | None]:
    """Return a's figures as ratios to b's (req/s: higher is better; CPU, latency: lower)."""
    found: dict[str, float | None] = {f"rps_{c}": ratio(a.rps[c], b.rps[c]) for c in plan.loads}
    low = plan.loads[0]
    found["p50_us_" + low] = ratio(a.p50_us[low], b.p50_us[low])
    found["added_p50_us_1"] = ratio(a.added_p50_us, b.added_p50_us)
    found["cpu_us_per_request"] = ratio(a.cpu_us, b.cpu_us)
    return found


def gw_names(summaries: Sequence[Summary]) -> list[str]:
    """Return the names of the gw rows."""
    return [s.name for s in summaries if s.name == "gw" or s.name.startswith("gw-")]


def ratios(summaries: Sequence[Summary], plan: Plan) -> dict[str, dict[str, float | None]]:
    """Return "row/column" comparisons: every target to direct, every gw row to every peer."""
    by_name = {s.name: s for s in summaries}
    found: dict[str, dict[str, float | None]] = {}
    if BASELINE in by_name:
        for summary in summaries:
            found[f"{summary.name}/{BASELINE}"] = compare(summary, by_name[BASELINE], plan)
    for gw in gw_names(summaries):
        for peer in summaries:
            if peer.name not in (gw, BASELINE):
                found[f"{gw}/{peer.name}"] = compare(by_name[gw], peer, plan)
    return found


def gate(summaries: Sequence[Summary], plan: Plan) -> dict[str, dict[str, Any]]:
    """Return, per gw row, whether its req/s reaches 0.6x the Express cluster at every level."""
    by_name = {s.name: s for s in summaries}
    peer = by_name.get(PEER_FOR_GATE)
    verdicts: dict[str, dict[str, Any]] = {}
    for gw in gw_names(summaries):
        if peer is None:
            continue
        found = {c: ratio(by_name[gw].rps[c], peer.rps[c]) for c in plan.loads}
        passed = all(value is not None and value >= GATE_FLOOR for value in found.values())
        verdicts[gw] = {"vs": PEER_FOR_GATE, "floor": GATE_FLOOR, "ratios": found, "pass": passed}
    return verdicts


DARK = "-dark"  # the suffix of a gw row's twin with access log and metrics off (--gw-dark)
OLD = "-baseline"  # the suffix of a gw row's twin run from --gw-baseline's tree


def observability(samples: Sequence[Sample], plan: Plan) -> dict[str, dict[str, Any]]:
    """Return, per gw row with a dark twin, what its access log and metrics cost: the row's
    CPU µs per request minus its twin's (see ``_paired``)."""
    return _all_paired(samples, plan, lambda name: name + DARK)


def against_baseline(samples: Sequence[Sample], plan: Plan) -> dict[str, dict[str, Any]]:
    """Return, per gw row with a twin from the baseline tree (``gw`` and ``gw-baseline``,
    ``gw-dark`` and ``gw-baseline-dark``), the row's CPU µs per request minus its twin's (see
    ``_paired``): what the change between the two trees saved (below zero) or cost."""
    return _all_paired(samples, plan, baseline_twin)


def baseline_twin(name: str) -> str:
    """The name of row ``name``'s twin run from the baseline tree."""
    if name.endswith(DARK):
        return name.removesuffix(DARK) + OLD + DARK
    return name + OLD


def _all_paired(
    samples: Sequence[Sample], plan: Plan, twin_of: Callable[[str], str]
) -> dict[str, dict[str, Any]]:
    names = {s.target for s in samples}
    found: dict[str, dict[str, Any]] = {}
    for name in sorted(names):
        twin = twin_of(name)
        if twin in names:
            paired = _paired(samples, plan, name, twin)
            if paired is not None:
                found[name] = paired
    return found


def _paired(samples: Sequence[Sample], plan: Plan, name: str, twin: str) -> dict[str, Any] | None:
    """Row ``name``'s CPU µs per request minus ``twin``'s in the same round and at the same
    loaded level, paired because the twins run next to each other in every round (the
    rounds' drift cancels), or at the same time (``together``: a dark twin with its row): the
    median of those differences, their lowest and highest, how many pairs and how many of them
    are below zero. None without a pair."""
    deltas = []
    for level in plan.loads:
        for together in (False, True):
            mine = {s.round: s.cpu_us_per_request for s in _runs(samples, name, level, together)}
            for theirs in _runs(samples, twin, level, together):
                own = mine.get(theirs.round)
                if own is not None and theirs.cpu_us_per_request is not None:
                    deltas.append(own - theirs.cpu_us_per_request)
    if not deltas:
        return None
    return {
        "vs": twin,
        "median_us": statistics.median(deltas),
        "min_us": min(deltas),
        "max_us": max(deltas),
        "pairs": len(deltas),
        "lower": sum(delta < 0 for delta in deltas),
        "together": any(s.together for s in samples if s.target == twin),
    }


def document(
    summaries: Sequence[Summary],
    samples: Sequence[Sample],
    plan: Plan,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Return the JSON document: settings, summaries, ratios, gate verdicts and raw samples."""
    return {
        **extra,
        "plan": {
            "rounds": plan.rounds,
            "duration_s": plan.duration,
            "warmup_s": plan.warmup,
            "connections": list(plan.levels),
            "per_worker": plan.per_worker,
            "wrk_script": str(plan.script.name),
        },
        "summaries": [asdict(s) for s in summaries],
        "ratios": ratios(summaries, plan),
        "gate": gate(summaries, plan),
        "observability": observability(samples, plan),
        "against_baseline": against_baseline(samples, plan),
        "samples": [s.to_dict() for s in samples],
    }
