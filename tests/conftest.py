"""Shared fixtures: real upstreams on loopback and real gunicorn gateways."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.upstream import Upstream, start_upstream


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = start_upstream()
    yield server
    server.close()


@pytest.fixture
def make_upstream() -> Iterator[Callable[[], Upstream]]:
    started: list[Upstream] = []

    def make() -> Upstream:
        server = start_upstream()
        started.append(server)
        return server

    yield make
    for server in started:
        server.close()


@pytest.fixture
def gateway() -> Iterator[Callable[..., GatewayProcess]]:
    started: list[GatewayProcess] = []

    def start(config: dict[str, Any] | str, **kwargs: Any) -> GatewayProcess:
        process = start_gateway(config, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
