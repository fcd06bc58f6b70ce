"""``gw explain`` says which rate-limit bucket a request gets, for each limit, and why."""

from __future__ import annotations

import json
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


CANARY_CONFIG = {
    "upstreams": {
        "stable": {"targets": ["http://127.0.0.1:9"]},
        "canary": {"targets": ["http://127.0.0.1:10"]},
    },
    "routes": [
        {"name": "api", "path": "/api/**", "upstream": "stable"},
        {
            "name": "canary",
            "path": "/api/**",
            "upstream": "canary",
            "match": {"headers": {"X-Canary": "1"}, "cookies": {"beta": {"present": True}}},
        },
        {"name": "v2", "path": "/api/**", "upstream": "canary", "match": {"query": {"v": "2"}}},
    ],
}


def explain_canary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str, *options: str
) -> list[str]:
    """The route stage's lines, without the rank explanation."""
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(CANARY_CONFIG))
    assert main(["explain", "-c", str(path), "GET", target, *options]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("route: "))
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith("  "))
    return [line for line in lines[start:end] if not line.startswith("  why: ")]


def test_explain_shows_which_conditions_chose_the_route(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    options = ["-H", "X-Canary: 1", "--cookie", "beta=yes", "--cookie", "other=1"]
    assert explain_canary(tmp_path, capsys, "/api/x?v=3", *options) == [
        "route: canary [routes[1]] pattern /api/**",
        "  condition cookie beta present: matched",
        "  condition header x-canary = '1': matched",
        "  excluded by conditions, ranks lower: /api/** [routes[2]]",
        "    condition query v = '2': failed",
        "  also matches, ranks lower: /api/** [routes[0]]",
    ]


def test_explain_shows_the_routes_conditions_excluded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Routes that rank above the winner but whose conditions failed are listed, and why."""
    assert explain_canary(tmp_path, capsys, "/api/x?v=2", "-H", "X-Canary: 1") == [
        "route: v2 [routes[2]] pattern /api/**",
        "  condition query v = '2': matched",
        "  excluded by conditions, ranks higher: /api/** [routes[1]]",
        "    condition cookie beta present: failed",
        "    condition header x-canary = '1': matched",
        "  also matches, ranks lower: /api/** [routes[0]]",
    ]


def test_explain_says_which_conditions_failed_when_no_route_matches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """When no route matches, the nearest routes say which of their conditions failed."""
    config = {
        "upstreams": CANARY_CONFIG["upstreams"],
        "routes": [
            {"path": "/beta/**", "upstream": "canary", "match": {"headers": {"X-Beta": "1"}}}
        ],
    }
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["explain", "-c", str(path), "GET", "/beta/x", "-H", "X-Beta: 2"]) == 1
    out = capsys.readouterr().out
    assert "conditions: header x-beta = '1' failed" in out


def test_explain_names_tunnels_and_idempotent_replays(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = {
        "upstreams": {"svc": {"targets": ["http://127.0.0.1:9"]}},
        "routes": [
            {"name": "ws", "path": "/ws/**", "upstream": "svc", "upgrade": ["websocket"]},
            {"name": "pay", "path": "/pay/**", "upstream": "svc", "idempotency": {"ttl": "1h"}},
        ],
    }
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["explain", "-c", str(path), "GET", "/ws/chat"]) == 0
    assert (
        "  upgrade: websocket handshakes become tunnels (idle 60 s, at most 3600 s, 256 per worker)"
        in capsys.readouterr().out.splitlines()
    )
    assert main(["explain", "-c", str(path), "POST", "/pay/x"]) == 0
    assert (
        "  idempotency: POST, PATCH with an Idempotency-Key answered once per key and caller,"
        " replayed for 3600 s" in capsys.readouterr().out.splitlines()
    )


def test_query_parameters_can_be_given_apart_from_the_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, "rate_limiting": None}))
    options = ["--query", "version=v2", "--query", "b=1"]
    assert main(["explain", "-c", str(path), "GET", "/api/x?a=0", *options, "--json"]) == 0
    stages = json.loads(capsys.readouterr().out)["stages"]
    assert stages[0]["query"] == "a=0&version=v2&b=1"
