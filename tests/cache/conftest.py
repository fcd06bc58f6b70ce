"""Fixtures for the cache's tests: a store in a temporary directory, a real redis-server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gw.cache.settings import CacheStoreSettings
from gw.cache.store import ResponseCache
from tests.fixtures.redis_server import RedisServer, session_server


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ResponseCache]:
    """A shared store of 64 KiB under a fresh directory."""
    cache = ResponseCache(CacheStoreSettings(max_bytes=64 * 1024), str(tmp_path / "cache"))
    yield cache
    cache.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """Start one real redis-server for the session (skip without it, fail when CI=true)."""
    yield from session_server()
