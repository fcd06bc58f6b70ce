"""Configuration models for the response cache.

The lead's schema includes them: ``RouteCacheSettings`` on a route (``cache:``) and
``CacheStoreSettings`` once for the gateway (``cache_store:``). Sizes are bytes, written as an
integer or with a unit (``64 MiB``, ``512 KiB``, ``1 GB``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from gw.host import redis as host_redis

_STRICT = ConfigDict(extra="forbid", frozen=True)
MIB = 1024 * 1024
DEFAULT_STATUSES = (200, 203, 204, 300, 301, 404, 405, 410, 414, 501)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_SIZE = re.compile(r"\s*(\d+)\s*([KMG]i?B|B)?\s*", re.IGNORECASE)
_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_BACKEND = re.compile(r"shared|(rediss?|unix|rediss?\+cluster|redis\+sentinel)://.+")


def parse_size(value: Any) -> Any:
    """Turn ``"64 MiB"`` into bytes; leave anything else for pydantic to judge."""
    if not isinstance(value, str):
        return value
    found = _SIZE.fullmatch(value)
    if found is None:
        raise ValueError("a size is an integer of bytes or a number with B, KiB, MiB, GiB, KB...")
    return int(found.group(1)) * _UNITS[(found.group(2) or "b").lower()]


# The schema's form of _SIZE (JSON Schema patterns have no flags: the cases are spelled out).
_SIZE_TEXT = r"^\s*[0-9]+\s*([KkMmGg][Ii]?[Bb]|[Bb])?\s*$"
Size = Annotated[
    int,
    BeforeValidator(
        parse_size,
        json_schema_input_type=int | Annotated[str, Field(pattern=_SIZE_TEXT)],
    ),
]


class RouteCacheSettings(BaseModel):
    """How one route's responses are cached."""

    model_config = _STRICT

    ttl: float = Field(gt=0, le=86400, description="Longest time (s) an entry is served.")
    vary_headers: tuple[str, ...] = Field(
        default=(),
        description="Request headers whose values are part of the cache key "
        "(Accept-Language, Accept-Encoding...). An upstream Vary naming any other header "
        "makes its response uncacheable.",
    )
    max_body_bytes: Size = Field(
        default=MIB, gt=0, le=64 * MIB, description="Larger bodies are streamed, not stored."
    )
    statuses: tuple[int, ...] = Field(
        default=DEFAULT_STATUSES, description="Upstream statuses that may be stored."
    )
    honor_client_no_cache: bool = Field(
        default=True,
        description="A request's Cache-Control no-cache/no-store (or Pragma: no-cache) skips "
        "the cache. Turn off to stop clients from sending every request to the upstream.",
    )

    @field_validator("vary_headers")
    @classmethod
    def _check_headers(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        """Accept only header names; keep them lower-case, each once."""
        for name in names:
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"{name!r} is not a header name")
        return tuple(dict.fromkeys(name.lower() for name in names))

    @field_validator("statuses")
    @classmethod
    def _check_statuses(cls, statuses: tuple[int, ...]) -> tuple[int, ...]:
        """Accept final statuses only (200-599), except 206 (a range is not the whole body)."""
        for status in statuses:
            if not 200 <= status <= 599 or status in (206, 304):
                raise ValueError(f"status {status} cannot be cached")
        return statuses


class CacheStoreSettings(BaseModel):
    """Where cached responses live: ``shared`` by the workers of a host, or one Redis."""

    model_config = _STRICT

    backend: str = Field(
        default="shared",
        description="'shared' (files under GW_RUNTIME_DIR/cache) or a redis://, rediss://, "
        "unix://, redis+cluster://, rediss+cluster:// or redis+sentinel:// URL shared by "
        "many hosts.",
    )
    max_bytes: Size = Field(
        default=64 * MIB, gt=0, description="Bound of the shared store (Redis: use maxmemory)."
    )
    lock_timeout: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="Longest wait (s) for another worker's fill of the same key.",
    )
    redis_timeout: float = Field(
        default=0.05, gt=0, le=10, description="Seconds allowed per Redis call (then: a miss)."
    )
    decline_seconds: float = Field(
        default=2.0,
        ge=0,
        le=3600,
        description="After a fill turned out uncacheable, misses of that key skip the fill "
        "lock for this long (so they do not queue behind each other).",
    )
    key_prefix: str = Field(default="gw:cache:", description="Redis key prefix.")

    @field_validator("backend")
    @classmethod
    def _check_backend(cls, backend: str) -> str:
        """Accept 'shared' or a Redis URL."""
        if not _BACKEND.fullmatch(backend):
            raise ValueError(
                "backend is 'shared' or a redis://, rediss://, unix://, redis+cluster://, "
                "rediss+cluster:// or redis+sentinel:// URL"
            )
        host_redis.check_url(backend)
        return backend
