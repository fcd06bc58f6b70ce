"""Command-line choices: which rows run, and with which gw worker model."""

from __future__ import annotations

from pathlib import Path

import pytest
import run
from proxybench.targets import GwOptions


def test_default_runs_every_row_in_table_order() -> None:
    specs = run.target_specs(run.parse_args([]))
    assert [s.name for s in specs] == [
        "direct",
        "nginx",
        "express-1",
        "express-cluster-2",
        "fastify",
        "floor",
        "floor-falcon",
        "gw",
        "gw-full-rs256",
        "gw-full-hs256",
    ]
    assert specs[7].gw == GwOptions()  # gunicorn.conf.py's own defaults
    assert [s.auth for s in specs[7:]] == [None, "RS256", "HS256"]


def test_quick_is_one_short_round() -> None:
    args = run.parse_args(["--quick"])
    assert (args.duration, args.rounds) == (2.0, 1)


def test_gw_flags_become_gunicorn_environment() -> None:
    args = run.parse_args(["--targets", "gw", "--gw-worker-class", "gthread"])
    args.gw_workers, args.gw_threads = 2, 8
    (spec,) = run.target_specs(args)
    assert spec.gw.env() == {"GW_WORKER_CLASS": "gthread", "GW_WORKERS": "2", "GW_THREADS": "8"}


def test_sync_gets_one_thread_or_gunicorn_would_run_gthread() -> None:
    assert run.parse_variant("sync:4").env() == {
        "GW_WORKER_CLASS": "sync",
        "GW_WORKERS": "4",
        "GW_THREADS": "1",
    }


def test_variants_replace_the_single_gw_row() -> None:
    args = run.parse_args(["--targets", "direct,gw", "--gw-variant", "sync:4"])
    args.gw_variant.append("balanced:2x4")
    names = [s.name for s in run.target_specs(args)]
    assert names == ["direct", "gw-sync:4", "gw-balanced:2x4"]
    assert run.parse_variant("balanced:2x4").worker_class == "gw.edge.worker.BalancedThreadWorker"


@pytest.mark.parametrize("text", ["eventlet", "", "sync:x"])
def test_bad_variants_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        run.parse_variant(text)


def test_unknown_target_is_refused() -> None:
    with pytest.raises(SystemExit, match="unknown target"):
        run.target_specs(run.parse_args(["--targets", "direct,haproxy"]))


def test_no_access_log_reaches_every_gw_row() -> None:
    args = run.parse_args(["--targets", "gw", "--gw-no-access-log", "--gw-variant", "sync:2"])
    (spec,) = run.target_specs(args)
    assert spec.gw.access_log is False and spec.gw.workers == 2


def test_full_rows_take_the_worker_flags_but_not_the_variants() -> None:
    args = run.parse_args(["--targets", "gw,gw-full-hs256", "--gw-workers", "1"])
    args.gw_variant.append("sync:4")
    names = [(s.name, s.gw.workers) for s in run.target_specs(args)]
    assert names == [("gw-sync:4", 4), ("gw-full-hs256", 1)]


def test_connections_per_worker_labels_each_level_and_scales_by_workers() -> None:
    plan = run.make_plan(run.parse_args(["--connections-per-worker", "1,8"]))
    assert plan.levels == ("1/w", "8/w", "1")
    assert [plan.connections(level, workers=2) for level in plan.levels] == [2, 16, 1]


def test_default_levels_are_total_connections() -> None:
    plan = run.make_plan(run.parse_args([]))
    assert plan.levels == ("16", "64", "1") and plan.connections("64", workers=2) == 64


@pytest.mark.parametrize("text", ["0", "8,8", "x", ""])
def test_bad_connection_counts_are_refused(text: str) -> None:
    with pytest.raises(SystemExit):
        run.parse_args(["--connections-per-worker", text])


def test_dark_twins_follow_each_gw_row_with_observability_off() -> None:
    args = run.parse_args(
        ["--targets", "direct,gw,gw-full-hs256", "--gw-dark", "--gw-workers", "1"]
    )
    specs = run.target_specs(args)
    assert [s.name for s in specs] == [
        "direct",
        "gw",
        "gw-dark",
        "gw-full-hs256",
        "gw-full-hs256-dark",
    ]
    lit, dark = specs[3], specs[4]
    assert (lit.gw.access_log, lit.gw.metrics) == (True, True)
    assert (dark.gw.access_log, dark.gw.metrics) == (False, False)
    assert dark.auth == "HS256" and dark.gw.workers == 1


def test_gw_venv_runs_gw_and_the_floors_and_the_baseline_may_take_another(
    tmp_path: Path,
) -> None:
    system, plain = tmp_path / "system", tmp_path / "plain"
    for venv in (system, plain):
        (venv / "bin").mkdir(parents=True)
        (venv / "bin" / "gunicorn").touch()
    rows = ["--targets", "direct,floor,gw,gw-full-hs256", "--gw-dark"]
    args = run.parse_args(
        [*rows, "--gw-venv", str(system), "--gw-baseline", ".", "--gw-baseline-venv", str(plain)]
    )

    venvs = {s.name: s.venv for s in run.target_specs(args)}
    assert venvs == {
        "direct": None,
        "floor": system,
        "gw": system,
        "gw-dark": system,
        "gw-baseline": plain,
        "gw-baseline-dark": plain,
        "gw-full-hs256": system,
        "gw-full-hs256-dark": system,
        "gw-full-hs256-baseline": plain,
        "gw-full-hs256-baseline-dark": plain,
    }


def test_a_venv_without_gunicorn_or_a_baseline_venv_without_a_baseline_is_refused(
    tmp_path: Path,
) -> None:
    with pytest.raises(SystemExit):
        run.parse_args(["--gw-venv", str(tmp_path)])
    with pytest.raises(SystemExit):
        run.parse_args(["--gw-baseline-venv", str(tmp_path)])


def test_loading_twins_together_needs_the_twins() -> None:
    with pytest.raises(SystemExit):
        run.parse_args(["--targets", "gw", "--gw-dark-together"])
    assert run.parse_args(["--gw-dark", "--gw-dark-together"]).gw_dark_together
