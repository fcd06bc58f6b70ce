"""Compile ``rate_limiting:`` into the admit stage, and open the limiter its backend names.

Runs at start-up (and in ``gw check``); problems are added to the caller's list.
"""

from __future__ import annotations

from collections.abc import Callable

from gw.errors import ConfigError
from gw.limits import Limiter
from gw.limits.admission import Admission
from gw.limits.settings import RateLimitingSettings
from gw.limits.shared import open_shared_table


def compile_admission(
    settings: RateLimitingSettings | None, problems: list[str]
) -> Admission | None:
    """Build the admit stage; None without ``rate_limiting:`` or when a problem was found."""
    if settings is None:
        return None
    opener = limiter_opener(settings)
    if opener is None:
        problems.append(
            f"rate_limiting.backend: {settings.backend!r} is neither 'shared' nor a "
            "redis://, rediss://, unix://, redis+cluster://, rediss+cluster:// or "
            "redis+sentinel:// URL"
        )
        return None
    try:
        return Admission(settings, opener)
    except ConfigError as ex:
        problems.extend(ex.problems)
        return None


def limiter_opener(settings: RateLimitingSettings) -> Callable[[], Limiter] | None:
    """Return how a worker opens the backend's limiter (after the fork); None: unknown."""
    backend = settings.backend
    if backend == "shared":
        deadline = (settings.decision_timeout_ms or 50.0) / 1000
        return lambda: open_shared_table(deadline)
    timeout = (settings.decision_timeout_ms or 5.0) / 1000
    if backend.startswith(("redis://", "rediss://", "unix://", "redis+sentinel://")):

        def open_redis() -> Limiter:
            from gw.limits.redis_backend import RedisLimiter

            return RedisLimiter(backend, timeout=timeout)

        return open_redis
    if backend.startswith(("redis+cluster://", "rediss+cluster://")):

        def open_redis_cluster() -> Limiter:
            from gw.limits.redis_cluster import RedisClusterLimiter

            return RedisClusterLimiter(backend, timeout=timeout)

        return open_redis_cluster
    return None
