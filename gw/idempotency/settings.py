"""Configuration models for safe retries by ``Idempotency-Key``.

``RouteIdempotencySettings`` on a route (``idempotency:``) and ``IdempotencyStoreSettings``
once for the gateway (``idempotency_store:``): the response cache's store settings, with a key
prefix and a wait of their own (the records live apart from cached responses).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from gw.cache.settings import MIB, CacheStoreSettings, Size

_STRICT = ConfigDict(extra="forbid", frozen=True)
DAY = 86400.0
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY}
# Methods whose retries need a key: the safe ones (GET, HEAD, OPTIONS) are retried freely.
KEYED_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def parse_duration(value: Any) -> Any:
    """Turn ``"24h"`` (or ``90s``, ``15m``, ``7d``) into seconds; leave numbers to pydantic."""
    if not isinstance(value, str):
        return value
    found = _DURATION.fullmatch(value)
    if found is None:
        raise ValueError("a duration is a number of seconds or a number with ms, s, m, h or d")
    return float(found.group(1)) * _UNITS[found.group(2) or "s"]


_DURATION_TEXT = r"^\s*[0-9]+(\.[0-9]+)?\s*(ms|s|m|h|d)?\s*$"
Duration = Annotated[
    float,
    BeforeValidator(
        parse_duration,
        json_schema_input_type=float | Annotated[str, Field(pattern=_DURATION_TEXT)],
    ),
]


class RouteIdempotencySettings(BaseModel):
    """Which requests of a route are made safe to retry, and for how long."""

    model_config = _STRICT

    ttl: Duration = Field(
        default=DAY,
        gt=0,
        le=7 * DAY,
        description="How long a stored answer is replayed for its key (24h, 90m, 3600...).",
    )
    methods: tuple[str, ...] = Field(
        default=("POST", "PATCH"), description="Methods that honour Idempotency-Key."
    )
    required: bool = Field(
        default=False, description="Refuse (400) a request of these methods without a key."
    )
    max_request_bytes: Size = Field(
        default=MIB,
        gt=0,
        le=64 * MIB,
        description="A keyed request's body is read whole to be compared: 413 above this.",
    )
    max_body_bytes: Size = Field(
        default=MIB,
        gt=0,
        le=64 * MIB,
        description="Larger upstream answers are passed on, not stored (a retry reaches the "
        "upstream again).",
    )

    @field_validator("methods")
    @classmethod
    def _check_methods(cls, methods: tuple[str, ...]) -> tuple[str, ...]:
        """Accept unsafe methods only, upper-cased, each once."""
        upper = tuple(dict.fromkeys(m.upper() for m in methods))
        for method in upper:
            if method not in KEYED_METHODS:
                raise ValueError(f"{method} cannot be keyed (one of POST, PUT, PATCH, DELETE)")
        if not upper:
            raise ValueError("name at least one method")
        return upper


class IdempotencyStoreSettings(CacheStoreSettings):
    """Where idempotency records live: ``shared`` (files under GW_RUNTIME_DIR/idempotency,
    one host) or one Redis (every host). ``lock_timeout`` is how long a duplicate waits for
    the first request with its key before it gets 409."""

    lock_timeout: float = Field(
        default=30.0,
        gt=0,
        le=300,
        description="Longest wait (s) of a concurrent duplicate for the first request's answer "
        "(then 409). With Redis it is also the in-flight mark's life: keep it above the "
        "route's slowest answer (the default is above server.deadline's default, 25 s).",
    )
    key_prefix: str = Field(default="gw:idem:", description="Redis key prefix.")
    decline_seconds: float = Field(default=0.0, ge=0, le=0, description="Not used here.")
