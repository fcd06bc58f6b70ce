"""The response cache through real gunicorn workers: repeat requests never reach the upstream,
one user's answer is never served to another, no-store is obeyed, and a burst of concurrent
misses reaches the upstream once per host."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
import requests

from gw.auth import hash_api_key
from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.rawhttp import raw_request
from tests.support.upstream import Upstream, start_upstream

KEYS = {"alice-key-" + "a" * 24: "alice", "bob-key-" + "b" * 26: "bob"}


@pytest.fixture(scope="module")
def cached() -> Iterator[tuple[GatewayProcess, Upstream]]:
    upstream = start_upstream()
    upstream.delay = 0.3  # slow enough for concurrent misses to overlap
    gw = start_gateway(
        {
            "upstreams": {"svc": {"targets": [upstream.url]}},
            "auth": {
                "type": "api_key",
                "api_keys": {
                    "keys": [
                        {"id": user, "sha256": hash_api_key(key), "consumer": user}
                        for key, user in KEYS.items()
                    ]
                },
            },
            "routes": [
                {
                    "name": "public",
                    "path": "/public/**",
                    "upstream": "svc",
                    "auth": "none",
                    "cache": {"ttl": 30},
                },
                {"name": "mine", "path": "/me/**", "upstream": "svc", "cache": {"ttl": 30}},
                {
                    "name": "nostore",
                    "path": "/nostore/**",
                    "upstream": "svc",
                    "auth": "none",
                    "cache": {"ttl": 30},
                },
            ],
        },
        workers=4,
        threads=4,
    )
    yield gw, upstream
    gw.stop()
    upstream.close()


def test_repeat_requests_are_served_without_the_upstream(
    cached: tuple[GatewayProcess, Upstream],
) -> None:
    gw, upstream = cached
    before = upstream.count()
    first = requests.get(f"{gw.url}/public/a?x=1&y=2", timeout=5)
    assert first.headers["X-Cache"] == "MISS"
    for _ in range(10):
        again = requests.get(f"{gw.url}/public/a?y=2&x=1", timeout=5)  # same query, reordered
        assert again.headers["X-Cache"] == "HIT"
        assert again.content == first.content
        assert int(again.headers["Age"]) >= 0
    assert upstream.count() == before + 1


def test_one_users_response_is_never_served_to_another(
    cached: tuple[GatewayProcess, Upstream],
) -> None:
    gw, _ = cached
    (alice_key, _), (bob_key, _) = KEYS.items()
    alice = requests.get(f"{gw.url}/me/profile", headers={"X-API-Key": alice_key}, timeout=5)
    bob = requests.get(f"{gw.url}/me/profile", headers={"X-API-Key": bob_key}, timeout=5)
    assert alice.headers["X-Cache"] == bob.headers["X-Cache"] == "MISS"
    assert '"X-User-Id", "alice"' in alice.text and '"X-User-Id", "bob"' in bob.text
    again = requests.get(f"{gw.url}/me/profile", headers={"X-API-Key": bob_key}, timeout=5)
    assert again.headers["X-Cache"] == "HIT" and '"X-User-Id", "bob"' in again.text
    assert requests.get(f"{gw.url}/me/profile", timeout=5).status_code == 401


def test_no_store_is_obeyed(cached: tuple[GatewayProcess, Upstream]) -> None:
    gw, upstream = cached
    before = upstream.count()
    for _ in range(3):
        response = requests.get(f"{gw.url}/nostore/__nostore", timeout=5)
        assert response.headers["X-Cache"] == "BYPASS"
    assert upstream.count() == before + 3


def test_purge_by_route_from_outside_the_server(cached: tuple[GatewayProcess, Upstream]) -> None:
    gw, upstream = cached
    requests.get(f"{gw.url}/public/purge-me", timeout=5)
    assert requests.get(f"{gw.url}/public/purge-me", timeout=5).headers["X-Cache"] == "HIT"
    env = {**os.environ, "GW_RUNTIME_DIR": gw.env["GW_RUNTIME_DIR"]}
    done = subprocess.run(
        [sys.executable, "-m", "gw.cli", "cache", "purge", "--route", "public"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=True,
    )
    assert done.stdout.startswith("purged ")
    before = upstream.count()
    assert requests.get(f"{gw.url}/public/purge-me", timeout=5).headers["X-Cache"] == "MISS"
    assert upstream.count() == before + 1


def test_a_burst_of_concurrent_misses_reaches_the_upstream_once(
    cached: tuple[GatewayProcess, Upstream],
) -> None:
    gw, upstream = cached
    before = upstream.count()
    answers: list[str] = []
    lock = threading.Lock()

    def fetch() -> None:
        response = requests.get(f"{gw.url}/public/burst", timeout=10)
        with lock:
            answers.append(response.headers.get("X-Cache", ""))

    threads = [threading.Thread(target=fetch) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(answers) == 16
    assert upstream.count() == before + 1
    assert answers.count("MISS") == 1 and answers.count("HIT") == 15


@pytest.fixture(scope="module")
def behind_proxy() -> Iterator[tuple[GatewayProcess, Upstream]]:
    """A cached public route; the test client plays a trusted TLS-terminating proxy."""
    upstream = start_upstream()
    gw = start_gateway(
        {
            "server": {"trusted_proxies": ["127.0.0.1/32"]},
            "upstreams": {"svc": {"targets": [upstream.url]}},
            "routes": [
                {
                    "name": "public",
                    "path": "/public/**",
                    "upstream": "svc",
                    "auth": "none",
                    "cache": {"ttl": 30},
                }
            ],
        },
        workers=2,
    )
    yield gw, upstream
    gw.stop()
    upstream.close()


def test_repeated_parameters_in_another_order_are_another_entry(
    behind_proxy: tuple[GatewayProcess, Upstream],
) -> None:
    """An upstream that reads the first ``cb`` answers each order differently."""
    gw, upstream = behind_proxy
    before = upstream.count()
    evil_first = requests.get(f"{gw.url}/public/q?cb=evil&cb=good", timeout=5)
    good_first = requests.get(f"{gw.url}/public/q?cb=good&cb=evil", timeout=5)
    assert evil_first.headers["X-Cache"] == good_first.headers["X-Cache"] == "MISS"
    assert upstream.count() == before + 2
    assert upstream.last().target.endswith("?cb=good&cb=evil")
    again = requests.get(f"{gw.url}/public/q?cb=good&cb=evil", timeout=5)
    assert again.headers["X-Cache"] == "HIT" and again.content == good_first.content
    assert upstream.count() == before + 2


def test_http_and_https_are_two_entries(behind_proxy: tuple[GatewayProcess, Upstream]) -> None:
    """An answer made for http (links, redirects) is never served to an https client."""
    gw, upstream = behind_proxy
    before = upstream.count()
    plain = requests.get(f"{gw.url}/public/scheme", timeout=5)
    https = {"X-Forwarded-Proto": "https"}
    secure = requests.get(f"{gw.url}/public/scheme", headers=https, timeout=5)
    assert plain.headers["X-Cache"] == "MISS"
    assert secure.headers["X-Cache"] == "MISS"
    assert upstream.count() == before + 2
    assert upstream.last().header("X-Forwarded-Proto") == "https"
    again = requests.get(f"{gw.url}/public/scheme", headers=https, timeout=5)
    assert again.headers["X-Cache"] == "HIT" and again.content == secure.content
    assert '"X-Forwarded-Proto", "https"' in again.text
    assert upstream.count() == before + 2


def test_a_host_with_another_port_is_another_entry(
    behind_proxy: tuple[GatewayProcess, Upstream],
) -> None:
    """The upstream is told X-Forwarded-Host with the port and may build links from it: an
    answer made for gw.test:1337 is never served to clients of gw.test."""
    gw, upstream = behind_proxy
    before = upstream.count()
    request = "GET /public/links HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n"
    odd = raw_request(gw.port, request.format("gw.test:1337").encode())
    plain = raw_request(gw.port, request.format("gw.test").encode())
    assert odd.header("X-Cache") == plain.header("X-Cache") == "MISS"
    assert b"gw.test:1337" in odd.body and b"gw.test:1337" not in plain.body
    assert upstream.count() == before + 2
