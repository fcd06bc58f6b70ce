"""The configuration schema: one set of pydantic models drives validation, the JSON Schema
printed by ``gw schema`` and the documented defaults.

Two input shapes are accepted besides the native one, so that the seed documents load
unchanged: seed 000's ``servers``/``paths`` and seed 003's ``routes`` with ``upstream`` given as
a URL. Both are read by the same models; ``gw.config`` turns them into the native shape.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_STRICT = ConfigDict(extra="forbid", frozen=True)

HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
Seconds = Annotated[float, Field(gt=0, le=3600)]


def _upper_methods(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    methods = [m.upper() for m in value]
    unknown = sorted(set(methods) - HTTP_METHODS)
    if unknown:
        raise ValueError(f"unknown HTTP method(s) {unknown} (known: {sorted(HTTP_METHODS)})")
    if not methods:
        raise ValueError("must list at least one method (omit the key to allow every method)")
    return methods


class ServerSettings(BaseModel):
    """Settings of the gateway itself (``server:``)."""

    model_config = _STRICT

    trusted_proxies: list[str] = Field(
        default=["127.0.0.1/32", "::1/128", "unix"],
        description="Peers whose X-Forwarded-For/-Proto are believed: CIDR networks, or "
        "'unix' for peers on a unix socket (the nginx drop-in).",
    )
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=0, description="413 above this.")
    health_path: str = Field(default="/health", pattern=r"^/[A-Za-z0-9._~/-]*$")
    ready_path: str = Field(default="/ready", pattern=r"^/[A-Za-z0-9._~/-]*$")
    access_log: bool = True
    deadline: Seconds = Field(
        default=25.0,
        description="Upper bound on any upstream timeout; keep it below gunicorn's timeout.",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            if entry != "unix":
                ipaddress.ip_network(entry, strict=False)
        return value


class UpstreamSettings(BaseModel):
    """One named upstream service (``upstreams: {name: ...}``)."""

    model_config = _STRICT

    targets: list[str] = Field(min_length=1, description="Base URLs: http://host:port[/base]")
    connect_timeout: Seconds = 2.0
    read_timeout: Seconds = 20.0
    pool_size: int = Field(default=16, ge=1, le=1024, description="Kept-alive connections.")
    preserve_host: bool = Field(
        default=False, description="Send the client's Host instead of the target's."
    )


class PrefixRewrite(BaseModel):
    """Replace a leading path prefix: ``{prefix: /api/v1, to: /v2}``."""

    model_config = _STRICT

    prefix: str
    to: str


class RouteSettings(BaseModel):
    """One route (``routes: [...]``); the seed 003 form is a subset of this."""

    model_config = _STRICT

    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    path: str
    methods: list[str] | None = None
    host: str | None = None
    upstream: str = Field(description="An upstream name, or a URL (seed 003 style).")
    strip_prefix: str | None = None
    rewrite: PrefixRewrite | None = None
    read_timeout: Seconds | None = None

    _methods = field_validator("methods")(_upper_methods)


class SeedServer(BaseModel):
    """Seed 000: ``servers: [{alias, url}]``."""

    model_config = _STRICT

    alias: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    url: str


class SeedIntegration(BaseModel):
    model_config = _STRICT

    type: Literal["http_proxy"]
    server: str


class SeedPath(BaseModel):
    """Seed 000: ``paths: [{method, path, integration: {type: http_proxy, server}}]``."""

    model_config = _STRICT

    method: str
    path: str
    integration: SeedIntegration

    _method = field_validator("method")(lambda cls, v: (_upper_methods([v]) or [v])[0])


class GatewaySettings(BaseModel):
    """The whole configuration file."""

    model_config = _STRICT

    server: ServerSettings = ServerSettings()
    upstreams: dict[str, UpstreamSettings] = {}
    routes: list[RouteSettings] = []
    servers: list[SeedServer] = Field(default=[], description="Seed 000 form of upstreams.")
    paths: list[SeedPath] = Field(default=[], description="Seed 000 form of routes.")


# Blocks that belong to features this version does not have. They are refused, never
# ignored: a gateway that silently skipped an `auth` block would serve every route
# unauthenticated.
NOT_YET_SUPPORTED = {
    "auth": "authentication",
    "rate_limiting": "rate limiting",
    "transformations": "response transformations",
    "cache": "response caching",
    "cors": "CORS",
}
