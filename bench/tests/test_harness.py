"""The harness against real processes: nginx, node, gunicorn and wrk on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from proxybench import load, procs, targets

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (shutil.which("nginx") and shutil.which("wrk")), reason="needs nginx and wrk"
    ),
]

RUN = Path(__file__).resolve().parent.parent / "run.py"
HAVE_EXPRESS = shutil.which("node") and (targets.EXPRESS_DIR / "node_modules").is_dir()


def _gw_imports() -> bool:
    python = Path(targets.gunicorn_path()).with_name("python")
    done = subprocess.run(
        [str(python), "-c", "import gw.app"], cwd=targets.REPO_DIR, capture_output=True, timeout=60
    )
    return done.returncode == 0


def _group_gone(pgid: int) -> bool:
    """Return whether no process of the group is left (zombies awaiting reaping aside)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2 :].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return False
    return True


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[targets.Target]:
    target = targets.launch_upstream(tmp_path)
    try:
        yield targets.ready(target, timeout=10)
    finally:
        target.child.stop()
    assert _group_gone(target.child.pid)


def _proxied(spec: targets.TargetSpec, tmp_path: Path, upstream: targets.Target) -> int:
    """Start one proxy, check it relays the upstream's exact body, stop it, check it is gone."""
    target = targets.launch(spec, tmp_path, upstream)
    try:
        targets.ready(target, timeout=30)
        assert procs.fetch(target.port, targets.PATH) == (200, targets.BODY.encode())
        processes = int(target.info["processes"])
    finally:
        target.child.stop()
    assert _group_gone(target.child.pid)
    return processes


def test_upstream_answers_the_27_byte_body(upstream: targets.Target) -> None:
    status, body = procs.fetch(upstream.port, "/api/anything")
    assert status == 200 and body == targets.BODY.encode() and len(body) == 27


def test_nginx_proxies_the_upstream(tmp_path: Path, upstream: targets.Target) -> None:
    assert _proxied(targets.PEERS["nginx"], tmp_path, upstream) >= 2  # master + workers


@pytest.mark.skipif(not HAVE_EXPRESS, reason="needs node and bench/express/node_modules")
def test_express_cluster_runs_two_workers(tmp_path: Path, upstream: targets.Target) -> None:
    assert _proxied(targets.PEERS["express-cluster-2"], tmp_path, upstream) == 3


@pytest.mark.parametrize("name", ["floor", "floor-falcon"])
def test_the_floor_proxies_the_upstream_with_two_workers(
    name: str, tmp_path: Path, upstream: targets.Target
) -> None:
    assert _proxied(targets.PEERS[name], tmp_path, upstream) == 3  # leader + 2 workers


def test_gw_proxies_the_upstream_under_gunicorn(tmp_path: Path, upstream: targets.Target) -> None:
    if not _gw_imports():
        pytest.skip("gw.app does not import yet")
    spec = targets.TargetSpec("gw", "gw", gw=targets.GwOptions("sync", 2))
    assert _proxied(spec, tmp_path, upstream) == 3  # master + 2 workers


def test_a_quick_run_prints_the_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    argv = [sys.executable, str(RUN), "--targets", "direct,nginx", "--duration", "1"]
    argv += ["--rounds", "1", "--warmup", "0", "--quiet-wait", "0", "--output", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    assert re.search(r"^nginx +\d+ +[\d,]+ ", done.stdout, re.MULTILINE)
    doc = json.loads(out.read_text())
    assert [s["name"] for s in doc["summaries"]] == ["direct", "nginx"]
    assert all(s["rps"] > 0 and s["cpu_us_per_request"] > 0 for s in doc["samples"])
    assert doc["machine"]["nproc"] == os.cpu_count()


def test_two_wrk_runs_at_once_are_each_charged_their_own_cpu(upstream: targets.Target) -> None:
    script = Path(__file__).resolve().parent.parent / "configs" / "wrk-auth.lua"
    runs = [load.start(upstream.url, conns, 1, script) for conns in (1, 8)]
    one, eight = (run.finish()[0] for run in runs)
    assert one.requests > 0 and eight.requests > one.requests
    assert 0 < one.loadgen_cpu_s < eight.loadgen_cpu_s < 2.5  # not the two together, twice
    with pytest.raises(load.LoadFailed, match="wrk exited"):
        load.Running(["wrk", "--no-such-option"], 1, 1).finish()


@pytest.mark.skipif(not _gw_imports(), reason="gw does not import in the bench's virtualenv")
def test_a_dark_twin_runs_at_the_same_time_as_its_row(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    argv = [sys.executable, str(RUN), "--targets", "direct,gw", "--gw-dark", "--gw-dark-together"]
    argv += ["--duration", "1"]
    argv += ["--rounds", "1", "--warmup", "0", "--quiet-wait", "0", "--output", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())
    runs = [(s["target"], s["level"], s["position"], s["together"]) for s in doc["samples"]]
    dark = [run for run in runs if run[0] == "gw-dark"]
    assert [level for _, level, _, _ in dark] == ["16", "64"]  # not at the latency level
    for _, level, position, together in dark:
        assert together and ("gw", level, position, True) in runs  # the row beside it
        assert ("gw", level, position - 1, False) in runs  # and its own run just before
    assert [s["name"] for s in doc["summaries"]] == ["direct", "gw"]
    assert doc["observability"]["gw"]["together"] is True
    assert doc["observability"]["gw"]["pairs"] == 2
    assert "loaded together" in done.stdout


def test_ctrl_c_stops_every_process_it_started(tmp_path: Path) -> None:
    argv = [sys.executable, str(RUN), "--targets", "direct,nginx", "--duration", "10"]
    argv += ["--warmup", "0", "--quiet-wait", "0", "--output", str(tmp_path / "r.json")]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    groups = [int(pid) for pid in re.findall(r" (\d+)", line.split(":", 1)[1])]
    time.sleep(1.5)  # inside the first wrk run
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    assert len(groups) == 2 and all(_group_gone(pgid) for pgid in groups)
    assert not (tmp_path / "r.json").exists()
