"""Shadow mode and operator audit through real gunicorn workers: a shadow limit or a shadow
auth policy never refuses and says what it would have done; reloads, limit resets and cache
purges each leave one line in the gateway's audit file."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.metrics.scrape import samples, total, value
from tests.support.gateway import GatewayProcess
from tests.support.tokens import claims, mint_hs256
from tests.support.upstream import Upstream, wait_for

Start = Callable[..., GatewayProcess]
SECRET = "s" * 48
IDENTITY = {"x-user-id", "x-user-role", "x-user-issuer"}


def gw_cli(gw: GatewayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GW_RUNTIME_DIR": gw.env["GW_RUNTIME_DIR"]}
    return subprocess.run(
        [sys.executable, "-m", "gw.cli", *args, "-c", str(gw.config_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )


def scrape(gw: GatewayProcess) -> dict[Any, float]:
    return samples(requests.get(f"{gw.url}/metrics", timeout=5).text)


def log_events(gw: GatewayProcess, event: str) -> list[dict[str, Any]]:
    lines = []
    for line in gw.log_text().splitlines():
        _, found, text = line.partition("gw.audit: ")
        if found and f'"event":"{event}"' in text:
            lines.append(json.loads(text))
    return lines


def test_a_shadow_limit_lets_every_request_through_and_reports_the_would_be_rejections(
    gateway: Start, upstream: Upstream
) -> None:
    gw = gateway(
        {
            "upstreams": {"svc": {"targets": [upstream.url]}},
            "routes": [{"name": "api", "path": "/**", "upstream": "svc"}],
            "rate_limiting": {
                "default": {"name": "probe", "requests_per_minute": 1, "mode": "shadow"}
            },
        }
    )
    answers = [requests.get(f"{gw.url}/x/{i}", timeout=5) for i in range(5)]
    assert [a.status_code for a in answers] == [200] * 5
    assert upstream.count() == 5
    assert not any("X-RateLimit-Limit" in a.headers or "RateLimit" in a.headers for a in answers)

    name = "gw_ratelimit_decisions_total"
    # Each worker publishes its own counts (within 0.1 s): wait for both decisions.
    assert wait_for(lambda: total(scrape(gw), name, mode="shadow") == 5, timeout=5)
    found = scrape(gw)
    assert value(found, name, policy="probe", decision="rejected", mode="shadow") == 4
    assert value(found, name, policy="probe", decision="allowed", mode="shadow") == 1
    assert total(found, name, mode="enforce") == 0

    assert wait_for(lambda: len(log_events(gw, "ratelimit_shadow")) == 4, timeout=5)
    line = log_events(gw, "ratelimit_shadow")[0]
    assert (line["decision"], line["limit"], line["code"]) == (
        "would_reject",
        "probe",
        "rate_limit_exceeded",
    )
    request_ids = {a.headers["X-Request-Id"] for a in answers[1:]}
    assert {ln["request_id"] for ln in log_events(gw, "ratelimit_shadow")} == request_ids

    def decisions() -> Any:
        stats = gw_cli(gw, "limits", "stats")
        assert stats.returncode == 0, stats.stderr
        return json.loads(stats.stdout)["decisions"]

    expected = {"enforce": {}, "shadow": {"probe": {"allowed": 1, "rejected": 4}}}
    wait_for(lambda: decisions() == expected, timeout=5)  # every worker's counts published
    assert decisions() == expected


def test_shadow_auth_forwards_every_caller_anonymously_and_counts_the_verdicts(
    gateway: Start, upstream: Upstream
) -> None:
    gw = gateway(
        {
            "upstreams": {"svc": {"targets": [upstream.url]}},
            "routes": [{"name": "api", "path": "/**", "upstream": "svc", "auth": "shadow"}],
            "auth": {
                "issuer": "https://auth.example.com",
                "secret": SECRET,
                "audiences": ["api.example.com"],
            },
        }
    )
    good = mint_hs256(SECRET, claims())
    bad = mint_hs256("t" * 48, claims())
    spoofed = {"X-User-Id": "admin", "X-User-Role": "admin"}
    for token in (bad, good):
        headers = {"Authorization": f"Bearer {token}", **spoofed}
        response = requests.get(f"{gw.url}/orders/1", headers=headers, timeout=5)
        assert response.status_code == 200
        seen = upstream.last()
        assert seen.header_names() & IDENTITY == set()
    assert upstream.count() == 2

    name = "gw_auth_shadow_decisions_total"
    assert wait_for(lambda: total(scrape(gw), name) == 2, timeout=5)
    found = scrape(gw)
    assert value(found, name, route="api", decision="would_reject", reason="bad_signature") == 1
    assert value(found, name, route="api", decision="would_allow", reason="") == 1
    (line,) = log_events(gw, "auth_shadow")
    assert (line["decision"], line["reason"], line["status"]) == (
        "would_reject",
        "bad_signature",
        401,
    )
    assert log_events(gw, "auth_failure") == []
    assert good not in gw.log_text() and bad not in gw.log_text()


def audit_file(gw: GatewayProcess) -> list[dict[str, Any]]:
    path = Path(gw.env["GW_RUNTIME_DIR"], "audit.log")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_reloads_resets_and_purges_each_write_one_audit_line(
    gateway: Start, upstream: Upstream
) -> None:
    config = {
        "upstreams": {"svc": {"targets": [upstream.url]}},
        "routes": [{"name": "api", "path": "/**", "upstream": "svc"}],
        "rate_limiting": {"default": {"requests_per_minute": 5}},
    }
    gw = gateway(config)
    assert audit_file(gw) == []  # starting is not an operator action here

    config["rate_limiting"]["default"]["requests_per_minute"] = 6
    gw.config_path.write_text(yaml.safe_dump(config))
    accepted = hashlib.sha256(gw.config_path.read_bytes()).hexdigest()
    gw.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: len(audit_file(gw)) == 1, timeout=15)

    gw.config_path.write_text("routes: [oops\n")
    refused = hashlib.sha256(gw.config_path.read_bytes()).hexdigest()
    gw.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: len(audit_file(gw)) == 2, timeout=15)
    assert requests.get(f"{gw.url}/x", timeout=5).status_code == 200  # still serving
    gw.config_path.write_text(yaml.safe_dump(config))  # the CLI reads the file too

    reset = gw_cli(gw, "limits", "reset", "default|ip:127.0.0.1")
    assert reset.returncode == 0, reset.stderr
    purge = gw_cli(gw, "cache", "purge")
    assert purge.returncode == 0, purge.stderr

    lines = audit_file(gw)
    assert [(ln["action"], ln["result"]) for ln in lines] == [
        ("config.reload", "accepted"),
        ("config.reload", "refused"),
        ("limits.reset", "reset"),
        ("cache.purge", "0 removed"),
    ]
    assert lines[0]["digest"] == f"sha256:{accepted}"
    assert lines[1]["digest"] == f"sha256:{refused}" and lines[1]["problems"] >= 1
    assert lines[0]["target"] == str(gw.config_path)
    # The master's stderr (the gateway's log) has the reload lines, once each.
    reloads = [ln for ln in log_events(gw, "admin_action") if ln["action"] == "config.reload"]
    assert reloads == lines[:2]
