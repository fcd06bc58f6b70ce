"""Fixtures for the shaping tests: real JSON upstreams and an aggregator per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from gw.shaping.compose import Aggregator
from tests.shaping.json_upstream import JsonUpstream, Reply, start_json_upstream


@pytest.fixture
def json_upstream() -> Iterator[Callable[..., JsonUpstream]]:
    started: list[JsonUpstream] = []

    def start(replies: dict[str, Reply] | None = None) -> JsonUpstream:
        upstream = start_json_upstream(replies)
        started.append(upstream)
        return upstream

    yield start
    for upstream in started:
        upstream.close()


@pytest.fixture
def aggregator() -> Iterator[Aggregator]:
    runner = Aggregator(threads=8)
    yield runner
    runner.close()
