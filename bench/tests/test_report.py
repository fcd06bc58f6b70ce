"""Medians of interleaved rounds, ratios, the gate and the printed table."""

from __future__ import annotations

from pathlib import Path

import pytest
from proxybench import report, table
from proxybench.load import LoadResult
from proxybench.schedule import Plan, Sample, rotate

PLAN = Plan(rounds=3, duration=5.0, warmup=0.0, script=Path("x.lua"))


def _sample(target: str, rnd: int, conns: int, rps: float, p50: float, cpu_us: float) -> Sample:
    """Return a sample of a 5-second run with the given rate, p50 and CPU per request."""
    requests = int(rps * 5)
    result = LoadResult(conns, 5.0, requests, 0, 0, p50, p50 * 2, p50 * 4, p50, p50 * 8)
    return Sample(target, rnd, 0, result, cpu_us * requests / 1e6, 0.1, other_cpu_s=0.5)


def _samples() -> list[Sample]:
    """Three rounds; round 1 is a noisy outlier for every target."""
    base = {"direct": (60000, 100, 10), "nginx": (30000, 300, 20)}
    base |= {"express-cluster-2": (6000, 2000, 200), "gw": (4000, 3000, 450)}
    found = []
    for rnd, scale in enumerate((1.0, 0.5, 1.1)):
        for name, (rps, p50, cpu) in base.items():
            for conns in PLAN.throughput:
                found.append(_sample(name, rnd, conns, rps * scale, p50, cpu))
            found.append(_sample(name, rnd, 1, rps / 10, p50 / 10 + rnd, cpu))
    return found


def _summaries() -> dict[str, report.Summary]:
    names = {"direct": 3, "nginx": 3, "express-cluster-2": 3, "gw": 5}
    return {s.name: s for s in report.summarize(_samples(), PLAN, names)}


def test_rates_are_medians_of_rounds_so_one_bad_round_does_not_count() -> None:
    summaries = _summaries()
    assert summaries["gw"].rps[16] == pytest.approx(4000)
    assert summaries["direct"].rps[64] == pytest.approx(60000)


def test_added_latency_is_measured_against_direct_in_the_same_round() -> None:
    # 1-connection p50: direct 10 + round, gw 300 + round, so gw adds 290 in every round.
    assert _summaries()["gw"].added_p50_us == pytest.approx(290)
    assert _summaries()["direct"].added_p50_us is None


def test_cpu_per_request_is_the_median_with_its_range() -> None:
    gw = _summaries()["gw"]
    assert gw.cpu_us == pytest.approx(450, rel=1e-3)
    assert gw.cpu_us_min == pytest.approx(450, rel=1e-3)


def test_gate_compares_gw_with_the_express_cluster() -> None:
    verdict = report.gate(list(_summaries().values()), PLAN)["gw"]
    assert verdict["ratios"][16] == pytest.approx(4000 / 6000)
    assert verdict["pass"] is True


def test_gate_fails_below_six_tenths() -> None:
    summaries = _summaries()
    slow = report.Summary(**{**summaries["gw"].__dict__, "rps": {16: 3000.0, 64: 4000.0, 1: 1.0}})
    verdict = report.gate([summaries["express-cluster-2"], slow], PLAN)["gw"]
    assert verdict["pass"] is False


def test_ratios_cover_every_target_to_direct_and_gw_to_every_peer() -> None:
    found = report.ratios(list(_summaries().values()), PLAN)
    assert found["nginx/direct"]["rps_16"] == pytest.approx(0.5)
    assert found["gw/nginx"]["cpu_us_per_request"] == pytest.approx(22.5, rel=1e-3)
    assert "gw/direct" in found and "nginx/gw" not in found


def test_table_has_a_row_per_target_and_the_gate_line() -> None:
    text = table.render(list(_summaries().values()), PLAN, {"nproc": 2})
    rows = {line.split()[0] for line in text.splitlines() if line}
    assert {"direct", "nginx", "express-cluster-2", "gw"} <= rows
    assert "gw / express-cluster-2" in text
    assert "gate: gw req/s >= 0.6x express-cluster-2 at every level: PASS" in text
    assert "4,000" in text and "+290" in text


def test_table_warns_when_other_work_loaded_the_box() -> None:
    text = table.render(list(_summaries().values()), PLAN, {"nproc": 2})
    assert "WARNING: other work" not in text  # 0.5 s of 5 s: 0.1 cores, quiet enough
    noisy = report.Summary(**{**_summaries()["gw"].__dict__, "other_cores": 0.9})
    assert "WARNING: other work on the box" in "\n".join(table.noise_lines([noisy]))


def test_ratios_of_missing_or_negative_figures_are_not_shown() -> None:
    assert report.ratio(-31.0, 290.0) is None
    assert report.ratio(None, 2.0) is None and report.ratio(3.0, 0.0) is None
    assert report.ratio(3.0, 2.0) == 1.5


def test_rotation_gives_every_target_every_position() -> None:
    names = ["a", "b", "c"]
    firsts = {rotate(names, shift)[0] for shift in range(3)}
    assert firsts == set(names) and rotate(names, 1) == ["b", "c", "a"]


def test_document_is_json_ready() -> None:
    import json

    doc = report.document(list(_summaries().values()), _samples(), PLAN, {"timestamp": "t"})
    decoded = json.loads(json.dumps(doc))
    assert decoded["gate"]["gw"]["pass"] is True
    assert len(decoded["samples"]) == 4 * 3 * 3
