"""Per-upstream pool settings through real gunicorn (one worker): ``idle_timeout`` retires
kept-alive connections that waited too long, ``max_connections`` caps the connections in use
at once per target, queueing up to ``connect_timeout`` and then answering 503 upstream_busy."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.evil_upstream import EvilUpstream, ok_answer, start_evil_upstream
from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.rawhttp import RawResponse, get

WORKERS = [None, "gw.edge.worker.BalancedThreadWorker"]  # gevent (the default) and gthread
SLOW = 0.6  # seconds each slow answer takes
SHORT_IDLE = 0.5


@dataclass(frozen=True)
class Upstreams:
    idle: EvilUpstream  # behind short_idle and default_idle
    capped: EvilUpstream  # max_connections: 2
    uncapped: EvilUpstream  # no cap: the control
    tight: EvilUpstream  # max_connections: 1, connect_timeout short

    def all(self) -> tuple[EvilUpstream, ...]:
        return (self.idle, self.capped, self.uncapped, self.tight)


@pytest.fixture
def upstreams() -> Iterator[Upstreams]:
    slow = {"slow": [SLOW, ok_answer("slow")], "slower": [2.0, ok_answer("slower")]}
    servers = Upstreams(*(start_evil_upstream(slow) for _ in range(4)))
    yield servers
    for server in servers.all():
        server.close()


def _config(u: Upstreams) -> dict[str, Any]:
    upstreams = {
        "short_idle": {"targets": [u.idle.url], "idle_timeout": SHORT_IDLE},
        "default_idle": {"targets": [u.idle.url]},
        "capped": {"targets": [u.capped.url], "max_connections": 2},
        "uncapped": {"targets": [u.uncapped.url]},
        "tight": {"targets": [u.tight.url], "max_connections": 1, "connect_timeout": 0.3},
    }
    routes = [
        {"path": f"/{name}/**", "upstream": name, "strip_prefix": f"/{name}"} for name in upstreams
    ]
    return {"upstreams": upstreams, "routes": routes}


@pytest.fixture(params=WORKERS, ids=["gevent", "gthread"])
def gw(request: Any, upstreams: Upstreams) -> Iterator[GatewayProcess]:
    process = start_gateway(_config(upstreams), workers=1, threads=8, worker_class=request.param)
    yield process
    process.stop()


def _connections(upstream: EvilUpstream, tokens: list[str]) -> list[int]:
    return [upstream.requests_for(f"/ok/{token}")[0].connection for token in tokens]


def _ask(gw: GatewayProcess, route: str, token: str) -> None:
    answer = get(gw.port, f"/{route}/ok/{token}")
    assert (answer.status, answer.body) == (200, token.encode())


def test_a_connection_idle_longer_than_idle_timeout_is_not_reused(
    gw: GatewayProcess, upstreams: Upstreams
) -> None:
    for route in ("short_idle", "default_idle"):
        tokens = [f"{route}-{i}" for i in range(3)]
        _ask(gw, route, tokens[0])
        _ask(gw, route, tokens[1])
        time.sleep(SHORT_IDLE + 0.3)
        _ask(gw, route, tokens[2])
        first, second, third = _connections(upstreams.idle, tokens)
        assert first == second, f"{route}: a fresh idle connection must be reused"
        if route == "short_idle":
            assert third != second, "an idle connection older than idle_timeout was reused"
        else:
            assert third == second, "the default idle_timeout (4 s) keeps it"


def _concurrently(gw: GatewayProcess, route: str, count: int, path: str) -> list[RawResponse]:
    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(get, gw.port, f"/{route}{path}") for _ in range(count)]
        return [f.result(timeout=30) for f in futures]


def test_max_connections_caps_what_the_upstream_sees_at_once_and_queues_the_rest(
    gw: GatewayProcess, upstreams: Upstreams
) -> None:
    capped = _concurrently(gw, "capped", 5, "/case/slow")
    uncapped = _concurrently(gw, "uncapped", 5, "/case/slow")

    assert [a.status for a in capped] == [200] * 5, [a.body for a in capped]
    assert upstreams.capped.most_answering == 2
    assert len(upstreams.capped.requests_for("/case/slow")) == 5
    assert [a.status for a in uncapped] == [200] * 5
    assert upstreams.uncapped.most_answering == 5, "the control must reach 5 at once"


def test_a_request_that_finds_no_free_connection_in_time_gets_503_upstream_busy(
    gw: GatewayProcess, upstreams: Upstreams
) -> None:
    answers = _concurrently(gw, "tight", 2, "/case/slower")

    assert sorted(a.status for a in answers) == [200, 503]
    [busy] = [a for a in answers if a.status == 503]
    assert busy.json()["error"] == "upstream_busy"
    assert len(upstreams.tight.requests_for("/case/slower")) == 1
    assert upstreams.tight.most_answering == 1
    _ask(gw, "tight", "after-the-slow-one")  # the slot was given back
