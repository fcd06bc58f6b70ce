"""The operator's commands find the running gateway from its config file, as the demo runs it
(no GW_RUNTIME_DIR), act on its live state, leave an audit line, and say clearly when no
gateway serves the config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.support.demo import DEMO, start_demo_upstreams
from tests.support.gateway import ROOT, GatewayProcess, free_port, start_gateway
from tests.support.upstream import wait_for

SECRET = "demo-secret-" + "x" * 40
LOGIN_BUCKET = "overrides[0]|ip:127.0.0.1"  # the demo's 10/min login limit, for 127.0.0.1


def _demo_with_a_cache() -> str:
    """The demo's config, with seed 002's response cache on the products route."""
    config = yaml.safe_load((DEMO / "gw.yaml").read_text())
    products = next(route for route in config["routes"] if route["name"] == "products")
    products["cache"] = {"ttl": 60}
    return yaml.safe_dump(config, sort_keys=False)


@pytest.fixture(scope="module")
def demo() -> Iterator[GatewayProcess]:
    """The demo's services and gateway, started as run.sh does: without GW_RUNTIME_DIR."""
    services, env = start_demo_upstreams(SECRET)
    try:
        gw = start_gateway(_demo_with_a_cache(), extra_env=env, runtime_dir=False)
        try:
            assert "GW_RUNTIME_DIR" not in gw.env
            assert wait_for(lambda: _products(gw) is not None, timeout=10)
            yield gw
        finally:
            gw.stop()
    finally:
        services.terminate()
        services.wait(timeout=10)


def _products(gw: GatewayProcess) -> requests.Response | None:
    try:
        response = requests.get(f"{gw.url}/api/products/", timeout=2)
    except requests.RequestException:
        return None
    return response if response.status_code == 200 else None


def gw_cli(
    *args: str, env: dict[str, str] | None = None, without: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run ``gw ARGS`` as an operator would in a new shell (no GW_RUNTIME_DIR, no GW_CONFIG)."""
    gone = ("GW_RUNTIME_DIR", "GW_CONFIG", without)
    base = {k: v for k, v in {**os.environ, "JWT_SECRET": SECRET}.items() if k not in gone}
    return subprocess.run(
        [sys.executable, "-m", "gw.cli", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=30,
        check=False,
    )


def _audit_lines(stderr: str) -> list[dict[str, Any]]:
    return [
        json.loads(line.split("gw.audit: ", 1)[1])
        for line in stderr.splitlines()
        if "gw.audit: " in line
    ]


def test_limits_stats_and_peek_read_the_live_table(demo: GatewayProcess) -> None:
    statuses = [
        requests.post(f"{demo.url}/api/auth/login", timeout=5).status_code for _ in range(3)
    ]
    assert statuses == [200, 200, 200]

    stats = gw_cli("limits", "stats", "-c", str(demo.config_path))
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["used"] >= 1

    peek = gw_cli("limits", "peek", LOGIN_BUCKET, "-c", str(demo.config_path))
    assert peek.returncode == 0, peek.stderr
    state = json.loads(peek.stdout)
    assert (state["limit"], state["remaining"]) == (10, 7)


def test_limits_reset_empties_the_live_bucket_and_is_audited(demo: GatewayProcess) -> None:
    requests.post(f"{demo.url}/api/auth/login", timeout=5)
    reset = gw_cli("limits", "reset", LOGIN_BUCKET, "-c", str(demo.config_path))
    assert (reset.returncode, reset.stdout.strip()) == (0, "reset"), reset.stderr
    peek = gw_cli("limits", "peek", LOGIN_BUCKET, "-c", str(demo.config_path))
    assert json.loads(peek.stdout) == {"state": "full bucket"}

    (line,) = _audit_lines(reset.stderr)
    assert line["event"] == "admin_action" and line["action"] == "limits.reset"
    assert line["key"] == LOGIN_BUCKET and line["result"] == "reset"
    assert line["uid"] == os.getuid()
    runtime_dir = os.path.dirname(line["target"])
    logged = Path(runtime_dir, "audit.log").read_text().splitlines()
    assert json.loads(logged[-1]) == line


def test_cache_purge_empties_the_live_cache_and_is_audited(demo: GatewayProcess) -> None:
    first, again = _products(demo), _products(demo)
    assert first is not None and again is not None
    assert again.headers["X-Cache"] == "HIT"

    purge = gw_cli("cache", "purge", "-c", str(demo.config_path))
    assert purge.returncode == 0, purge.stderr
    assert purge.stdout.strip() == "purged 1 entry"
    after = _products(demo)
    assert after is not None and after.headers["X-Cache"] == "MISS"

    (line,) = _audit_lines(purge.stderr)
    assert line["action"] == "cache.purge" and line["result"] == "1 removed"
    assert Path(line["target"]).parent.joinpath("audit.log").exists()


@pytest.mark.parametrize(
    "command",
    [
        ("limits", "stats"),
        ("limits", "reset", "default|ip:10.0.0.1"),
        ("cache", "purge"),
        ("upstreams",),
    ],
)
def test_a_config_no_gateway_serves_is_refused_with_a_way_to_point_at_one(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text((DEMO / "gw.yaml").read_text())
    done = gw_cli(*command, "-c", str(config))
    assert done.returncode == 1, done.stdout
    assert "Traceback" not in done.stderr
    assert f"no running gateway serves {config}" in done.stderr
    assert "set GW_RUNTIME_DIR to the runtime directory" in done.stderr
    assert done.stdout == ""


def test_a_runtime_dir_without_a_gateway_is_refused(tmp_path: Path) -> None:
    done = gw_cli("limits", "stats", env={"GW_RUNTIME_DIR": str(tmp_path)})
    assert done.returncode == 1
    assert f"no running gateway in GW_RUNTIME_DIR={tmp_path}" in done.stderr
    assert "Traceback" not in done.stderr


def test_without_any_config_the_cli_says_how_to_name_the_gateway() -> None:
    done = gw_cli("limits", "stats")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "pass -c with the config file the gateway serves" in done.stderr


def test_a_config_the_shell_cannot_load_is_reported_without_a_traceback(
    demo: GatewayProcess,
) -> None:
    done = gw_cli("limits", "stats", "-c", str(demo.config_path), without="JWT_SECRET")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "environment variable JWT_SECRET is not set" in done.stderr


def test_a_second_gateway_on_the_same_config_refuses_to_start(demo: GatewayProcess) -> None:
    """Two masters on one runtime directory would reset each other's tables."""
    env = {**demo.env, "GW_BIND": f"127.0.0.1:{free_port()}"}
    second = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "gw.app:app"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, _ = second.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        second.terminate()
        out, _ = second.communicate(timeout=15)
        pytest.fail(f"a second gateway started on the same runtime directory:\n{out[-3000:]}")
    assert second.returncode != 0
    assert f"another gateway (pid {demo.proc.pid}, config {demo.config_path})" in out
    assert "Traceback" not in out
    assert _products(demo) is not None  # the first one still serves
