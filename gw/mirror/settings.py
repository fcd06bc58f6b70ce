"""The ``mirror:`` block of a route (shadow traffic); ``gw.mirror.policy`` compiles it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

_STRICT = ConfigDict(extra="forbid", frozen=True)


class MirrorSettings(BaseModel):
    """``mirror: {upstream: orders-next, percent: 10, max_body_bytes: 65536}`` on a route."""

    model_config = _STRICT

    upstream: str = Field(description="The shadow upstream's name (not the route's own).")
    percent: float = Field(
        default=100.0, gt=0, le=100, description="Share of the route's requests copied."
    )
    max_body_bytes: int = Field(
        default=64 * 1024,
        ge=0,
        description="Larger bodies, and bodies gw streams (over server.request_buffer_bytes), "
        "are not copied.",
    )
    max_in_flight: int = Field(
        default=16,
        ge=1,
        le=1024,
        description="Copies of this route in flight per worker; more are dropped (counted).",
    )
