"""Configuration of upgrade tunnels: ``tunnels:`` once for the gateway, ``upgrade:`` per route."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

_STRICT = ConfigDict(extra="forbid", frozen=True)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class TunnelSettings(BaseModel):
    """Limits of the tunnels every route with ``upgrade:`` opens (``tunnels:``)."""

    model_config = _STRICT

    idle_timeout: float = Field(
        default=60.0,
        gt=0,
        le=86400,
        description="Seconds without a byte either way before a tunnel is closed "
        "(nginx's proxy_read_timeout, Envoy's idle_timeout).",
    )
    max_lifetime: float = Field(
        default=3600.0,
        gt=0,
        le=7 * 86400,
        description="Seconds a tunnel may stay open at all; then it is closed.",
    )
    max_per_worker: int = Field(
        default=256,
        ge=1,
        description="Tunnels one worker process keeps open (handshakes under way included); "
        "over it, 503 tunnel_limit before the upstream is contacted.",
    )


def upgrade_protocols(value: list[str] | None) -> list[str] | None:
    """Lower-case the protocol names of a route's ``upgrade:`` (tokens, e.g. ``websocket``)."""
    if value is None:
        return None
    for name in value:
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"{name!r} is not a protocol name (an HTTP token like 'websocket')")
        if name.lower() == "h2c":
            # APPSEC: "h2c smuggling": after the switch the client speaks HTTP/2 to the
            # upstream, and every request on that connection bypasses routing and auth.
            raise ValueError("h2c is refused: its requests would bypass gw's routes and auth")
    return [name.lower() for name in value]
