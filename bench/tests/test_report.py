"""Medians of interleaved rounds, ratios, the gate and the printed table."""

from __future__ import annotations

from dataclasses import replace
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
    # One worker of two served 40 % of the requests at 1.1x the tree's CPU per request.
    worker = (cpu_us * 1.1 * requests * 0.4 / 1e6, int(requests * 0.4)) if conns > 1 else None
    return Sample(
        target,
        rnd,
        0,
        result,
        cpu_us * requests / 1e6,
        0.1,
        other_cpu_s=0.5,
        worker_cpu_s=worker[0] if worker else None,
        worker_requests=worker[1] if worker else None,
    )


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
    assert summaries["gw"].rps["16"] == pytest.approx(4000)
    assert summaries["direct"].rps["64"] == pytest.approx(60000)


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
    assert verdict["ratios"]["16"] == pytest.approx(4000 / 6000)
    assert verdict["pass"] is True


def test_gate_fails_below_six_tenths() -> None:
    summaries = _summaries()
    slow = report.Summary(
        **{**summaries["gw"].__dict__, "rps": {"16": 3000.0, "64": 4000.0, "1": 1.0}}
    )
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


def test_one_workers_cpu_is_divided_by_the_requests_it_served() -> None:
    gw = _summaries()["gw"]
    assert gw.worker_cpu_us == pytest.approx(495, rel=1e-2)  # 450 x 1.1
    text = table.render(list(_summaries().values()), PLAN, {"nproc": 2})
    assert "1 worker µs/req" in text and "495 (495-495)" in text


def test_per_worker_levels_are_reported_by_label() -> None:
    plan = Plan(rounds=1, duration=5.0, throughput=(4,), per_worker=True, script=Path("x.lua"))
    samples = []
    for name, rps in (("direct", 50000.0), ("gw", 5000.0)):
        for level, conns in (("4/w", 8), ("1", 1)):
            result = LoadResult(conns, 5.0, int(rps * 5), 0, 0, 100, 200, 400, 100, 800)
            samples.append(Sample(name, 0, 0, result, 1.0, 0.1, level=level))
    summaries = report.summarize(samples, plan, {"direct": 3, "gw": 3})
    assert summaries[1].rps == {"4/w": 5000.0, "1": 5000.0}
    text = table.render(summaries, plan, {"nproc": 2})
    assert "req/s@4/w" in text and "N x workers" in text
    assert "gate" not in text  # no Express cluster in this run


def test_observability_is_the_median_of_paired_differences_with_the_dark_twin() -> None:
    # Round 1 is slow for both twins alike: paired, it changes nothing.
    found = []
    for rnd, scale in enumerate((1.0, 1.5, 1.0)):
        for conns in PLAN.throughput:
            found.append(_sample("gw", rnd, conns, 4000, 3000, (300 + rnd) * scale))
            found.append(_sample("gw-dark", rnd, conns, 4000, 3000, 290 * scale))
        found.append(_sample("gw", rnd, 1, 400, 300, 900))  # the latency level is left out
        found.append(_sample("gw-dark", rnd, 1, 400, 300, 100))

    cost = report.observability(found, PLAN)

    assert list(cost) == ["gw"]
    assert cost["gw"]["vs"] == "gw-dark"
    assert cost["gw"]["pairs"] == 3 * len(PLAN.throughput)  # rounds x loaded levels
    assert cost["gw"]["median_us"] == pytest.approx(12)  # 10, 16.5 and 12 at each level
    assert cost["gw"]["min_us"] == pytest.approx(10)
    assert cost["gw"]["max_us"] == pytest.approx(16.5)
    line = table.observability_lines(found, PLAN)[0]
    assert line.startswith("observability: gw - gw-dark: +12.0 µs per request, the median of 6")
    assert line.endswith("(same round and level; +10.0 to +16.5; 0 below zero)")


def test_a_twin_loaded_together_with_its_row_is_paired_with_that_run_alone() -> None:
    # The row's own runs (300) are slower than its run beside the twin (280, the twin 270):
    # the cost is 10 from the runs made together, and the twin has no summary of its own.
    found = []
    for rnd in range(3):
        for conns in PLAN.throughput:
            found.append(_sample("gw", rnd, conns, 4000, 3000, 300))
            together = [_sample("gw", rnd, conns, 2000, 3000, 280)]
            together.append(_sample("gw-dark", rnd, conns, 2000, 3000, 270))
            found += [replace(s, together=True) for s in together]
        found.append(_sample("gw", rnd, 1, 400, 300, 900))

    cost = report.observability(found, PLAN)
    summaries = report.summarize(found, PLAN, {"gw": 3, "gw-dark": 3})

    assert cost["gw"]["median_us"] == pytest.approx(10)
    assert cost["gw"]["pairs"] == 3 * len(PLAN.throughput)
    assert cost["gw"]["together"] is True
    assert [s.name for s in summaries] == ["gw"]
    assert summaries[0].cpu_us == pytest.approx(300)  # its own runs only
    assert summaries[0].rps[PLAN.loads[0]] == pytest.approx(4000)
    line = table.observability_lines(found, PLAN)[0]
    assert "+10.0 µs per request" in line and "(same round and level, loaded together;" in line


def test_each_row_is_paired_with_its_twin_from_the_baseline_tree() -> None:
    # The new tree saves 5 µs in two rounds of three and costs 3 µs in the other.
    found = []
    for rnd, delta in enumerate((-5.0, 3.0, -5.0)):
        for conns in PLAN.throughput:
            for name, cpu in (("gw", 300), ("gw-dark", 290), ("gw-full-hs256", 400)):
                found.append(_sample(name, rnd, conns, 4000, 3000, cpu + delta))
                found.append(_sample(report.baseline_twin(name), rnd, conns, 4000, 3000, cpu))
            found.append(_sample("gw", rnd, 1, 400, 300, 900))  # the latency level is left out
            found.append(_sample("gw-baseline", rnd, 1, 400, 300, 100))

    against = report.against_baseline(found, PLAN)

    assert report.baseline_twin("gw-dark") == "gw-baseline-dark"
    assert {name: pair["vs"] for name, pair in against.items()} == {
        "gw": "gw-baseline",
        "gw-dark": "gw-baseline-dark",
        "gw-full-hs256": "gw-full-hs256-baseline",
    }
    pair = against["gw"]
    assert pair["pairs"] == 3 * len(PLAN.throughput)
    assert pair["median_us"] == pytest.approx(-5)
    assert (pair["min_us"], pair["max_us"]) == (pytest.approx(-5), pytest.approx(3))
    assert pair["lower"] == 2 * len(PLAN.throughput)
    dark = report.observability(found, PLAN)  # the dark twins, each with its own tree's
    assert {name: pair["vs"] for name, pair in dark.items()} == {
        "gw": "gw-dark",
        "gw-baseline": "gw-baseline-dark",
    }
    line = table.baseline_lines(found, PLAN)[0]
    assert line.startswith("against the baseline: gw - gw-baseline: -5.0 µs per request")
