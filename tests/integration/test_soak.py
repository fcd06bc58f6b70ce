"""Soak: a few hundred thousand mixed requests through one real gunicorn worker leak nothing.

One worker (so its RSS is the whole story), real upstreams, a mix of what a gateway answers
all day: proxied 200s, 401 (no key), 404 (no route), 429 (a tight limit on one route),
an aggregate of two upstream calls, and cache hits. After a warm-up (pools, caches, lazily
imported modules, the allocator's arenas), the worker's private anonymous memory, its open
descriptors, the shared limiter table's used slots and the Prometheus multiprocess files are
read; then the main run; then again. None may grow beyond a small bound.

The bound on memory: ``MAX_BYTES_PER_REQUEST`` (2 B/request, i.e. 400 KB over 200,000
requests) plus ``SLACK_BYTES`` (1 MiB) for the allocator's arena granularity. The leak this
test was written for (issue 13: the retry budget kept one timestamp per upstream send) grew
~41 B per proxied request, 20x the bound. Memory that is needed per request and kept is a
leak whatever its size; the bound only absorbs measurement noise.

``GW_SOAK_REQUESTS`` overrides the size of the main run (default 200,000).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gw.auth import hash_api_key
from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.loadgen import FastUpstream, Tally, hammer, start_fast_upstream

pytestmark = [pytest.mark.slow, pytest.mark.integration]

SOAK_REQUESTS = int(os.environ.get("GW_SOAK_REQUESTS", "200000"))
WARMUP_REQUESTS = int(os.environ.get("GW_SOAK_WARMUP", "30000"))
MAX_BYTES_PER_REQUEST = 2.0
SLACK_BYTES = 1024 * 1024
MAX_NEW_DESCRIPTORS = 4  # a pooled upstream connection may be replaced, never accumulated
MAX_NEW_SLOTS = 0  # the limiter keys are fixed (per route): the table must not fill
MAX_NEW_METRICS_FILES = 0  # the one worker keeps its files

API_KEY = "soak-key-" + "s" * 24

# Mixed traffic: 3 proxied, 2 cache hits, 1 aggregate, 1 each of 401, 404 and 429.
MIX = [
    b"GET /open/orders/1 HTTP/1.1\r\nHost: gw\r\n\r\n",
    b"GET /cached/catalog HTTP/1.1\r\nHost: gw\r\n\r\n",
    b"GET /open/orders/2?page=3 HTTP/1.1\r\nHost: gw\r\nX-Api-Key: "
    + API_KEY.encode()
    + b"\r\n\r\n",
    b"GET /private/me HTTP/1.1\r\nHost: gw\r\n\r\n",
    b"GET /agg/42 HTTP/1.1\r\nHost: gw\r\n\r\n",
    b"GET /nowhere/at/all HTTP/1.1\r\nHost: gw\r\n\r\n",
    b"GET /tight/x HTTP/1.1\r\nHost: gw\r\n\r\n",
    b"GET /cached/catalog HTTP/1.1\r\nHost: gw\r\n\r\n",
    b"GET /private/me HTTP/1.1\r\nHost: gw\r\nX-Api-Key: " + API_KEY.encode() + b"\r\n\r\n",
]
EXPECTED = {200: 6, 401: 1, 404: 1, 429: 1}  # per round of MIX (/tight admits its first only)


@dataclass(frozen=True)
class Usage:
    anonymous: int  # bytes of private anonymous memory (smaps_rollup)
    rss: int  # VmRSS, bytes
    descriptors: int
    limiter_slots: int
    metrics_files: int


@pytest.fixture(scope="module")
def soaked() -> Iterator[tuple[GatewayProcess, FastUpstream]]:
    upstream = start_fast_upstream()
    gw = start_gateway(_config(upstream), workers=1, threads=4)
    yield gw, upstream
    gw.stop()
    upstream.close()


def test_a_soak_of_mixed_requests_grows_nothing(
    soaked: tuple[GatewayProcess, FastUpstream],
) -> None:
    gw, upstream = soaked
    (worker,) = gw.worker_pids()
    _check(hammer(gw.port, MIX, WARMUP_REQUESTS), WARMUP_REQUESTS)
    before = _usage(gw, worker)
    sent_upstream = upstream.answered
    tally = hammer(gw.port, MIX, SOAK_REQUESTS)
    after = _usage(gw, worker)

    _check(tally, SOAK_REQUESTS)
    assert gw.worker_pids() == [worker], "the worker was replaced during the soak"
    grown = after.anonymous - before.anonymous
    per_request = grown / SOAK_REQUESTS
    report = (
        f"{SOAK_REQUESTS} requests ({upstream.answered - sent_upstream} upstream sends): "
        f"anonymous {before.anonymous} -> {after.anonymous} ({grown:+d} B, "
        f"{per_request:.2f} B/request, {per_request * 100_000 / 2**20:.2f} MiB/100k), "
        f"rss {before.rss} -> {after.rss}, fds {before.descriptors} -> {after.descriptors}, "
        f"slots {before.limiter_slots} -> {after.limiter_slots}, "
        f"metrics files {before.metrics_files} -> {after.metrics_files}"
    )
    print(report)
    assert grown <= MAX_BYTES_PER_REQUEST * SOAK_REQUESTS + SLACK_BYTES, report
    assert after.descriptors - before.descriptors <= MAX_NEW_DESCRIPTORS, report
    assert after.limiter_slots - before.limiter_slots <= MAX_NEW_SLOTS, report
    assert after.metrics_files - before.metrics_files <= MAX_NEW_METRICS_FILES, report


def _check(tally: Tally, sent: int) -> None:
    """Every request was answered, with the statuses and cache hits the mix implies."""
    assert not tally.errors, tally.errors[:5]
    assert tally.answered == sent
    rounds = sent // len(MIX)
    for status, per_round in EXPECTED.items():
        assert tally.statuses[status] >= per_round * rounds - len(MIX), tally.statuses
    assert set(tally.statuses) == set(EXPECTED), tally.statuses
    assert tally.cache_hits >= 2 * rounds - len(MIX) - 2, tally.cache_hits


def _usage(gw: GatewayProcess, pid: int) -> Usage:
    return Usage(
        anonymous=_smaps_kib(pid, "Anonymous") * 1024,
        rss=_status_kib(pid, "VmRSS") * 1024,
        descriptors=len(os.listdir(f"/proc/{pid}/fd")),
        limiter_slots=_limiter_slots(Path(gw.env["GW_RUNTIME_DIR"])),
        metrics_files=_metrics_files(Path(gw.env["GW_RUNTIME_DIR"])),
    )


def _smaps_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in smaps_rollup")


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _limiter_slots(runtime: Path) -> int:
    result = subprocess.run(
        [sys.executable, "-m", "gw.cli", "limits", "stats"],
        capture_output=True,
        text=True,
        env={**os.environ, "GW_RUNTIME_DIR": str(runtime)},
        timeout=30,
        check=True,
    )
    return int(json.loads(result.stdout)["used"])


def _metrics_files(runtime: Path) -> int:
    folder = runtime / "metrics"
    return len(list(folder.iterdir())) if folder.is_dir() else 0


def _config(upstream: FastUpstream) -> dict[str, object]:
    return {
        "upstreams": {"svc": {"targets": [upstream.url]}},
        "auth": {
            "type": "api_key",
            "api_keys": {
                "keys": [{"id": "soak", "sha256": hash_api_key(API_KEY), "consumer": "soak"}]
            },
        },
        "routes": [
            {"name": "open", "path": "/open/**", "upstream": "svc", "auth": "optional"},
            {"name": "private", "path": "/private/**", "upstream": "svc"},
            {
                "name": "cached",
                "path": "/cached/**",
                "upstream": "svc",
                "auth": "none",
                "cache": {"ttl": 3600},
            },
            {"name": "tight", "path": "/tight/**", "upstream": "svc", "auth": "none"},
            {
                "name": "agg",
                "path": "/agg/{id}",
                "methods": ["GET"],
                "auth": "none",
                "aggregate": {
                    "parts": [
                        {"key": "user", "upstream": "svc", "path": "/users/{params.id}"},
                        {"key": "orders", "upstream": "svc", "path": "/orders?user={params.id}"},
                    ]
                },
            },
        ],
        "rate_limiting": {
            "default": {"requests_per_second": 1_000_000, "key": "route"},
            "overrides": [{"path": "/tight/**", "requests_per_hour": 1, "key": "route"}],
        },
    }
