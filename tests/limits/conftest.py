"""Fixtures for the limiter's own tests: a real redis-server for the Redis backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.redis_server import RedisServer, session_server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """Start one real redis-server for the session (skip without it, fail when CI=true)."""
    yield from session_server()
