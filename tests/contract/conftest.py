"""The ``limiter`` fixture: every rate-limit backend, so that one suite holds them all."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gw.limits.local import LocalLimiter
from gw.limits.table import SharedTable
from tests.fixtures.redis_cluster import RedisCluster, session_cluster
from tests.fixtures.redis_sentinel import RedisSentinel, session_sentinel
from tests.fixtures.redis_server import RedisServer, session_server

BACKENDS = ["table", "redis", "redis-cluster", "redis-sentinel", "local"]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """Start one real redis-server for the session (skip without it, fail when CI=true)."""
    yield from session_server()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """Start one real three-node Redis Cluster for the session."""
    yield from session_cluster()


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[RedisSentinel]:
    """Start a real primary, replica and three sentinels for the session."""
    yield from session_sentinel()


@pytest.fixture(params=BACKENDS)
def limiter(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Yield a fresh, empty limiter of each backend."""
    if request.param == "table":
        path = str(tmp_path / "limits.table")
        SharedTable.create(path, slots=1024, stripes=8)
        with SharedTable.open(path) as table:
            yield table
    elif request.param == "redis":
        from gw.limits.redis_backend import RedisLimiter

        server: RedisServer = request.getfixturevalue("redis_server")
        # A generous timeout: these tests are about semantics, not a loaded CI machine.
        limiter = RedisLimiter(server.url, timeout=2.0, prefix=f"gw:test:{uuid.uuid4().hex}:")
        yield limiter
        limiter.close()
    elif request.param == "redis-cluster":
        from gw.limits.redis_cluster import RedisClusterLimiter

        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        cluster.flush()  # stats() counts every key under the prefix, on every node
        limiter = RedisClusterLimiter(cluster.url, timeout=2.0)
        yield limiter
        limiter.close()
    elif request.param == "redis-sentinel":
        from gw.limits.redis_backend import RedisLimiter

        ha: RedisSentinel = request.getfixturevalue("redis_sentinel")
        limiter = RedisLimiter(ha.url, timeout=2.0, prefix=f"gw:test:{uuid.uuid4().hex}:")
        yield limiter
        limiter.close()
    else:
        yield LocalLimiter()
