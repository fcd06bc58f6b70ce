"""`gw explain` beside a running gateway: live bucket and target state; a live 404's hint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import requests

from tests.support.gateway import GatewayProcess
from tests.support.upstream import Upstream


def test_explain_shows_the_live_bucket_and_target_state(
    gateway: Callable[..., GatewayProcess], upstream: Upstream, tmp_path: Path
) -> None:
    config = {
        "upstreams": {"u": {"targets": [upstream.url]}},
        "routes": [{"name": "api", "path": "/**", "upstream": "u"}],
        "rate_limiting": {"default": {"requests_per_minute": 5, "key": "client_ip"}},
    }
    gw = gateway(config, extra_env={"GW_RUNTIME_DIR": str(tmp_path)})
    for _ in range(2):
        assert requests.get(f"{gw.url}/x", timeout=5).status_code == 200
    env = {**os.environ, "GW_RUNTIME_DIR": str(tmp_path)}
    command = [sys.executable, "-m", "gw.cli", "explain", "-c", str(gw.config_path), "GET", "/x"]
    result = subprocess.run(
        [*command, "--json"], capture_output=True, text=True, env=env, timeout=30, check=True
    )
    stages = {stage["stage"]: stage for stage in json.loads(result.stdout)["stages"]}
    assert stages["rate limits"]["limits"] == [
        {
            "limit": "default",
            "bucket": "default|ip:127.0.0.1",
            "live": {"remaining": 3, "allowed": True},
        }
    ]
    target = upstream.url.rstrip("/")
    assert stages["upstream"]["live"] == {target: "healthy"}


def test_a_live_404_logs_the_nearest_routes_at_debug_level(
    gateway: Callable[..., GatewayProcess], upstream: Upstream
) -> None:
    config = {
        "upstreams": {"u": {"targets": [upstream.url]}},
        "routes": [{"name": "orders", "path": "/api/orders/{id}", "upstream": "u"}],
    }
    gw = gateway(config, extra_env={"GW_LOG_LEVEL": "debug"})
    assert requests.get(f"{gw.url}/api/order/7", timeout=5).status_code == 404
    expected = "nearest: orders (/api/orders/{id}): path: segment 2 is 'order', the route wants"
    for _ in range(50):
        if expected in gw.log_text():
            break
        time.sleep(0.1)
    assert expected in gw.log_text()
