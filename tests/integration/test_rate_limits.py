"""Rate limits hold exactly across real gunicorn workers, and across hosts through Redis."""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from tests.fixtures.redis_server import RedisServer, require_redis_server
from tests.support.gateway import GatewayProcess, free_port
from tests.support.upstream import Upstream

Start = Callable[..., GatewayProcess]


def limited_config(upstream: Upstream, per_minute: int, **extra: Any) -> dict[str, Any]:
    return {
        "upstreams": {"svc": {"targets": [upstream.url], "read_timeout": 5}},
        "routes": [{"name": "api", "path": "/api/**", "upstream": "svc"}],
        "rate_limiting": {
            "default": {"requests_per_minute": per_minute, "key": "route"},
            **extra,
        },
    }


def hammer(urls: list[str], threads: int, seconds: float) -> tuple[int, int, int, float]:
    """Send from ``threads`` clients for ``seconds``; return (200s, 429s, others, duration)."""
    counts = {"ok": 0, "limited": 0, "other": 0}
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def run(index: int) -> None:
        session = requests.Session()
        url = urls[index % len(urls)]
        while time.monotonic() < stop_at:
            try:
                status = session.get(url, timeout=10).status_code
            except requests.RequestException:
                status = -1
            kind = "ok" if status == 200 else "limited" if status == 429 else "other"
            with lock:
                counts[kind] += 1

    started = time.monotonic()
    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=seconds + 30)
    return counts["ok"], counts["limited"], counts["other"], time.monotonic() - started


def refill_allowance(per_minute: int, seconds: float) -> int:
    """Tokens that can refill during a run of ``seconds`` (plus one for the boundary)."""
    return math.floor(per_minute * seconds / 60) + 1


@pytest.mark.parametrize(
    "worker_class",
    ["gw.edge.worker.BalancedGeventWorker", "sync", "gw.edge.worker.BalancedThreadWorker"],
)
def test_four_workers_admit_exactly_the_limit(
    gateway: Start, upstream: Upstream, worker_class: str
) -> None:
    limit = 50
    gw = gateway(limited_config(upstream, limit), workers=4, worker_class=worker_class)
    ok, limited, other, took = hammer([f"{gw.url}/api/x"], threads=8, seconds=3)
    assert other == 0
    assert limited > 0
    assert limit <= ok <= limit + refill_allowance(limit, took) - 1 or ok == limit
    assert upstream.count() == ok  # rejected requests never reached the upstream


def test_rejection_has_seed_003_shape_and_headers(gateway: Start, upstream: Upstream) -> None:
    gw = gateway(limited_config(upstream, 2), workers=1)
    first = requests.get(f"{gw.url}/api/x", timeout=5)
    assert first.headers["X-RateLimit-Limit"] == "2"
    assert first.headers["X-RateLimit-Remaining"] == "1"
    assert first.headers["RateLimit-Policy"] == '"default";q=2;w=60'
    requests.get(f"{gw.url}/api/x", timeout=5)
    rejected = requests.get(f"{gw.url}/api/x", timeout=5)
    assert rejected.status_code == 429
    retry = int(rejected.headers["Retry-After"])
    assert 1 <= retry <= 30
    assert rejected.headers["Content-Type"] == "application/json"
    assert rejected.headers["X-RateLimit-Remaining"] == "0"
    assert int(rejected.headers["X-RateLimit-Reset"]) >= int(time.time())
    assert rejected.json() == {
        "error": "rate_limit_exceeded",
        "message": f"Too many requests. Retry after {retry} seconds.",
        "retry_after": retry,
    }
    assert upstream.count() == 2


def test_seed_003_login_override_is_per_client_ip(gateway: Start, upstream: Upstream) -> None:
    config = limited_config(upstream, 1000)
    config["rate_limiting"] = {
        "default": {"requests_per_second": 100, "burst": 20, "key": "header:X-User-Id"},
        "overrides": [
            {"path": "/api/auth/login", "requests_per_minute": 10, "key": "client_ip"},
            {"path": "/api/search/**", "requests_per_second": 20, "key": "header:X-User-Id"},
        ],
    }
    config["server"] = {"trusted_proxies": ["127.0.0.1/32"]}  # the client plays a proxy
    gw = gateway(config, workers=2)
    statuses = [
        requests.post(
            f"{gw.url}/api/auth/login",
            headers={"X-Forwarded-For": f"198.51.100.{i % 2}"},
            timeout=5,
        ).status_code
        for i in range(24)
    ]
    assert statuses.count(200) == 20  # 10 for each of the two client addresses
    other = requests.get(f"{gw.url}/api/orders", timeout=5)
    assert other.status_code == 200 and other.headers["X-RateLimit-Limit"] == "100"


def _wait_healthy(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"no healthy gateway at {url}")


def test_ipv6_loopback_and_ipv4_mapped_clients_each_have_their_own_bucket(
    gateway: Start, upstream: Upstream
) -> None:
    """One listener on ::1, one IPv6 listener that IPv4 clients reach (::ffff:127.0.0.1) and
    one plain IPv4 listener: ::1 and 127.0.0.1 are two clients, and 127.0.0.1 is one client
    whichever listener it comes through."""
    config = limited_config(upstream, 1)
    config["rate_limiting"]["default"]["key"] = "client_ip"
    ports = [free_port() for _ in range(3)]
    binds = f"[::1]:{ports[0]},[::ffff:127.0.0.1]:{ports[1]},127.0.0.1:{ports[2]}"
    gateway(config, workers=1, bind=binds)
    loopback6, mapped, plain = (
        f"http://[::1]:{ports[0]}",
        f"http://127.0.0.1:{ports[1]}",
        f"http://127.0.0.1:{ports[2]}",
    )
    _wait_healthy(plain)
    assert requests.get(f"{loopback6}/api/x", timeout=5).status_code == 200
    assert requests.get(f"{mapped}/api/x", timeout=5).status_code == 200
    assert requests.get(f"{plain}/api/x", timeout=5).status_code == 429  # the same 127.0.0.1
    assert requests.get(f"{loopback6}/api/x", timeout=5).status_code == 429
    assert upstream.count() == 2


def test_a_trusted_proxy_behind_a_dual_stack_listener_is_trusted(
    gateway: Start, upstream: Upstream
) -> None:
    """The proxy 127.0.0.1 reaches an IPv6 listener as ::ffff:127.0.0.1: still trusted."""
    config = limited_config(upstream, 1)
    config["rate_limiting"]["default"]["key"] = "client_ip"
    config["server"] = {"trusted_proxies": ["127.0.0.1/32"]}
    port = free_port()
    gateway(config, workers=1, bind=f"[::ffff:127.0.0.1]:{port}")
    url = f"http://127.0.0.1:{port}"
    _wait_healthy(url)
    for client in ("198.51.100.1", "198.51.100.2"):
        sent = requests.get(f"{url}/api/x", headers={"X-Forwarded-For": client}, timeout=5)
        assert sent.status_code == 200, client
        assert upstream.last().header("X-Real-IP") == client
    assert upstream.count() == 2


def test_forwarded_ipv4_mapped_clients_each_have_their_own_bucket(
    gateway: Start, upstream: Upstream
) -> None:
    config = limited_config(upstream, 1)
    config["rate_limiting"]["default"]["key"] = "client_ip"
    config["server"] = {"trusted_proxies": ["127.0.0.1/32"]}  # the client plays a proxy
    gw = gateway(config, workers=1)

    def status(client: str) -> int:
        sent = requests.get(f"{gw.url}/api/x", headers={"X-Forwarded-For": client}, timeout=5)
        return sent.status_code

    assert status("::ffff:10.0.0.1") == 200
    assert status("::ffff:10.0.0.2") == 200
    assert status("::1") == 200
    assert status("10.0.0.1") == 429  # the first client, spelled without the mapping
    assert upstream.count() == 3


def test_spoofed_identity_header_does_not_choose_the_bucket(
    gateway: Start, upstream: Upstream
) -> None:
    config = limited_config(upstream, 3)
    config["rate_limiting"]["default"]["key"] = "header:X-User-Id"
    gw = gateway(config, workers=1)
    statuses = [
        requests.get(f"{gw.url}/api/x", headers={"X-User-Id": f"user{i}"}, timeout=5).status_code
        for i in range(6)
    ]
    assert statuses == [200, 200, 200, 429, 429, 429]


def test_sigkilled_workers_never_wedge_the_limit(gateway: Start, upstream: Upstream) -> None:
    limit = 60
    gw = gateway(limited_config(upstream, limit), workers=4, threads=2)
    killer_stop = threading.Event()
    kills = []

    def killer() -> None:
        while not killer_stop.wait(0.4):
            pids = gw.worker_pids()
            if pids:
                os.kill(pids[len(kills) % len(pids)], signal.SIGKILL)
                kills.append(pids[0])

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        ok, limited, other, took = hammer([f"{gw.url}/api/x"], threads=8, seconds=4)
    finally:
        killer_stop.set()
        thread.join()
    assert len(kills) >= 5
    assert limited > 0
    # A request in flight on a killed worker may fail (connection reset) but is never admitted
    # twice: the admitted count stays within the limit plus refill.
    assert ok <= limit + refill_allowance(limit, took)
    assert upstream.count() <= limit + refill_allowance(limit, took)
    assert (
        ok >= limit - other
    )  # every token went to a request (or to one that died with its worker)
    # After the storm, the gateway still decides promptly.
    started = time.monotonic()
    assert requests.get(f"{gw.url}/api/x", timeout=10).status_code in (200, 429)
    assert time.monotonic() - started < 5


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(require_redis_server()).start()
    yield server
    server.close()


def test_two_hosts_sharing_redis_admit_exactly_the_limit(
    gateway: Start, upstream: Upstream, redis_server: RedisServer
) -> None:
    limit = 40
    config = limited_config(upstream, limit, backend=redis_server.url, decision_timeout_ms=200)
    host_a = gateway(config, workers=2)
    host_b = gateway(config, workers=2)
    ok, limited, other, took = hammer([f"{host_a.url}/api/x", f"{host_b.url}/api/x"], 8, 3)
    assert other == 0 and limited > 0
    assert limit <= ok <= limit + refill_allowance(limit, took) - 1 or ok == limit
    assert upstream.count() == ok


@pytest.mark.parametrize(("rule", "expected"), [("fail_open", 200), ("fail_closed", 503)])
def test_redis_down_follows_the_configured_rule(
    gateway: Start, upstream: Upstream, redis_server: RedisServer, rule: str, expected: int
) -> None:
    config = limited_config(
        upstream, 1000, backend=redis_server.url, on_error=rule, decision_timeout_ms=50
    )
    gw = gateway(config, workers=2)
    assert requests.get(f"{gw.url}/api/x", timeout=5).status_code == 200
    redis_server.stop()
    started = time.monotonic()
    statuses = [requests.get(f"{gw.url}/api/x", timeout=5).status_code for _ in range(6)]
    assert statuses == [expected] * 6
    assert time.monotonic() - started < 5  # no worker stuck waiting for redis
    if expected == 503:
        assert (
            requests.get(f"{gw.url}/api/x", timeout=5).json()["error"] == "rate_limiter_unavailable"
        )
    time.sleep(0.2)
    assert "rate limiter failed: redis check failed" in gw.log_text()
    assert f"({rule})" in gw.log_text()
