"""``gw explain`` says which rate-limit bucket a request gets, for each limit, and why."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gw.cli import main

CONFIG = {
    "upstreams": {"svc": {"targets": ["http://127.0.0.1:9"]}},
    "routes": [{"name": "api", "path": "/api/**", "upstream": "svc"}],
    "rate_limiting": {
        "overrides": [
            {
                "path": "/api/**",
                "limits": [
                    {"name": "per-ip", "requests_per_minute": 100},
                    {"name": "per-user", "requests_per_minute": 30, "key": "user"},
                    {
                        "name": "per-key",
                        "requests_per_minute": 10,
                        "key": "api_key",
                        "when_missing": "skip",
                    },
                    {
                        "name": "tenant",
                        "requests_per_minute": 5,
                        "key": "header:X-Tenant+route",
                        "when_missing": "reject",
                    },
                ],
            }
        ]
    },
}


def explain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], *options: str, status: int = 0
) -> list[str]:
    """The rate-limit stage's lines of ``gw explain GET /api/x``."""
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    assert main(["explain", "-c", str(path), "GET", "/api/x", *options]) == status
    lines = capsys.readouterr().out.splitlines()
    start = lines.index("rate limits: decided together: all take a token or none does")
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith("  "))
    return lines[start:end]


def test_an_anonymous_request_shows_fallbacks_skips_and_refusals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = explain(tmp_path, capsys, "--client-ip", "::ffff:198.51.100.7", status=1)
    assert lines[1:] == [
        "  per-ip (100/60s key client_ip): bucket per-ip|ip:198.51.100.7",
        "  per-user (30/60s key user): bucket per-user|ip:198.51.100.7"
        " (no user: the client address stands in)",
        "  per-key (10/60s key api_key): skipped (no api_key; when_missing: skip)",
        "  tenant (5/60s key header:X-Tenant+route): refused, 400 missing_header:"
        " the X-Tenant header is required (rate limit 'tenant')",
    ]


def test_an_api_key_caller_gets_a_bucket_in_every_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    options = ["--user", "acme", "--api-key-id", "partner-1", "--header", "X-Tenant: t1"]
    assert explain(tmp_path, capsys, *options)[1:] == [
        "  per-ip (100/60s key client_ip): bucket per-ip|ip:127.0.0.1",
        '  per-user (30/60s key user): bucket per-user|user:["api_key","acme"]',
        "  per-key (10/60s key api_key): bucket per-key|key:partner-1",
        "  tenant (5/60s key header:X-Tenant+route): bucket tenant|h:x-tenant=t1|route:api",
    ]
