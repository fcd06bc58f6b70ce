"""`gw limits` reads and resets the live table of a running gateway from outside it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import requests

from tests.support.gateway import GatewayProcess
from tests.support.upstream import Upstream


def gw_cli(runtime: Path, *args: str) -> str:
    env = {**os.environ, "GW_RUNTIME_DIR": str(runtime)}
    result = subprocess.run(
        [sys.executable, "-m", "gw.cli", "limits", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=True,
    )
    return result.stdout


def test_stats_peek_and_reset_on_a_live_gateway(
    gateway: Callable[..., GatewayProcess], upstream: Upstream, tmp_path: Path
) -> None:
    config = {
        "upstreams": {"u": {"targets": [upstream.url]}},
        "routes": [{"name": "api", "path": "/**", "upstream": "u"}],
        "rate_limiting": {"default": {"requests_per_minute": 3, "key": "client_ip"}},
    }
    gw = gateway(config, extra_env={"GW_RUNTIME_DIR": str(tmp_path)})
    statuses = [requests.get(f"{gw.url}/x", timeout=5).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]

    stats = json.loads(gw_cli(tmp_path, "stats"))
    assert stats["used"] == 1 and stats["table_full"] == 0
    key = "default|ip:127.0.0.1"
    state = json.loads(gw_cli(tmp_path, "peek", key, "-c", str(gw.config_path)))
    assert state["remaining"] == 0 and state["limit"] == 3

    assert gw_cli(tmp_path, "reset", key).strip() == "reset"
    assert requests.get(f"{gw.url}/x", timeout=5).status_code == 200
