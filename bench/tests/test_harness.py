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
from proxybench import procs, targets

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
