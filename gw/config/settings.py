"""The configuration schema's root: the whole file, the server and the routes (which join the
features); each feature's models live with the feature (``gw.auth.settings``,
``gw.limits.settings``, ``gw.upstream.settings``...). One set of pydantic models drives
validation, the JSON Schema printed by ``gw schema`` and the documented defaults.

Two input shapes are accepted besides the native one, so that the seed documents load
unchanged: seed 000's ``servers``/``paths`` and seed 003's ``routes`` with ``upstream`` given as
a URL. Both are read by the same models; ``gw.config.assemble`` turns them into the native shape.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gw.auth.settings import AuthSettings, RouteAuth
from gw.cache.settings import CacheStoreSettings, RouteCacheSettings
from gw.config.matching import MatchSettings
from gw.config.upstreams import UpstreamSettings
from gw.core.forwarding import parse_networks
from gw.core.methods import upper_methods
from gw.cors.settings import CorsSettings
from gw.guards.settings import NetworkList
from gw.idempotency.settings import IdempotencyStoreSettings, RouteIdempotencySettings
from gw.limits.settings import RateLimitingSettings
from gw.mirror.settings import MirrorSettings
from gw.observe.metrics import MetricsSettings
from gw.shaping.settings import (
    AggregateSettings,
    AggregatorSettings,
    CompressionSettings,
    TransformationSettings,
)
from gw.tunnel.settings import TunnelSettings, upgrade_protocols
from gw.upstream.settings import RetrySettings

_STRICT = ConfigDict(extra="forbid", frozen=True)
_HOST_NAME = re.compile(r"(\*\.)?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?|\[[0-9A-Fa-f:.]+\]")

Seconds = Annotated[float, Field(gt=0, le=3600)]


class ServerSettings(BaseModel):
    """Settings of the gateway itself (``server:``)."""

    model_config = _STRICT

    trusted_proxies: list[str] = Field(
        default=["unix"],
        description="Peers whose X-Forwarded-For/-Proto are believed: CIDR networks, or "
        "'unix' for peers on a unix socket (the nginx drop-in). Only list the address of a "
        "proxy that overwrites or appends to X-Forwarded-For.",
    )
    hosts: list[str] | None = Field(
        default=None,
        description="The host names served (exact, or '*.example.com' for any subdomain); "
        "other hosts get 421 unknown_host. Omit to serve any valid Host.",
    )
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=0, description="413 above this.")
    request_buffer_bytes: int = Field(
        default=64 * 1024,
        ge=0,
        description="Bodies up to this size are read whole before an upstream connection is "
        "taken, so a slow client never holds one; larger bodies stream. 0: always stream.",
    )
    min_upload_rate: float = Field(
        default=1024.0,
        ge=0,
        description="Bytes per second a request body must keep up after upload_grace "
        "seconds; slower uploads get 408 request_timeout. 0: no minimum.",
    )
    upload_grace: Seconds = Field(
        default=10.0, description="Seconds of any upload rate before min_upload_rate applies."
    )
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
        parse_networks(value)
        return value

    @field_validator("hosts")
    @classmethod
    def _host_names(cls, value: list[str] | None) -> list[str] | None:
        for entry in value or []:
            if not _HOST_NAME.fullmatch(entry):
                raise ValueError(f"{entry!r} is not a host name or '*.' followed by one")
        return value


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
    host: str | None = Field(
        default=None, description="Exact host, or '*.example.com' for any subdomain."
    )
    match: MatchSettings | None = Field(
        default=None,
        description="Conditions on headers, query parameters and cookies; all must hold.",
    )
    upstream: str | None = Field(
        default=None, description="An upstream name, or a URL (seed 003 style)."
    )
    aggregate: AggregateSettings | None = Field(
        default=None, description="Compose one JSON document from several upstreams."
    )
    strip_prefix: str | None = None
    rewrite: PrefixRewrite | None = None
    read_timeout: Seconds | None = None
    connect_timeout: Seconds | None = Field(
        default=None, description="Instead of the upstream's connect_timeout, on this route."
    )
    stream_timeout: Seconds | None = Field(
        default=None,
        description="Seconds the whole upstream answer may take, body included, instead of "
        "server.deadline: for downloads and streams that legitimately take longer.",
    )
    retries: RetrySettings | None = None
    cors: CorsSettings | None = None
    auth: RouteAuth | None = Field(
        default=None, description="required (default with an auth block), optional or none."
    )
    cache: RouteCacheSettings | None = Field(
        default=None, description="Cache this route's responses (GET/HEAD) for ttl seconds."
    )
    max_body_bytes: int | None = Field(
        default=None, ge=0, description="413 above this on this route, instead of the server's."
    )
    allow_from: NetworkList | None = Field(
        default=None,
        description="Only client addresses in these CIDR networks may use the route (403).",
    )
    deny_from: NetworkList | None = Field(
        default=None,
        description="Client addresses in these CIDR networks get 403; deny wins over allow.",
    )
    mirror: MirrorSettings | None = Field(
        default=None, description="Copy a share of the requests to a shadow upstream."
    )
    idempotency: RouteIdempotencySettings | None = Field(
        default=None,
        description="Replay the first answer to a retried POST/PATCH with the same "
        "Idempotency-Key instead of forwarding it again.",
    )
    upgrade: list[str] | None = Field(
        default=None,
        description="Protocols a GET may switch to (e.g. [websocket]): the handshake is "
        "forwarded and, on the upstream's 101, bytes are relayed both ways (see tunnels).",
    )

    _methods = field_validator("methods")(upper_methods)
    _upgrade = field_validator("upgrade")(upgrade_protocols)

    @model_validator(mode="after")
    def _one_destination(self) -> RouteSettings:
        if (self.upstream is None) == (self.aggregate is None):
            raise ValueError("give exactly one of 'upstream' or 'aggregate'")
        return self


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

    _method = field_validator("method")(lambda cls, v: (upper_methods([v]) or [v])[0])


# seed 002's security headers (X-XSS-Protection as today's browsers want it: off).
DEFAULT_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "X-XSS-Protection": "0",
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "Referrer-Policy": "strict-origin-when-cross-origin",
}


class GatewaySettings(BaseModel):
    """The whole configuration file."""

    model_config = _STRICT

    server: ServerSettings = ServerSettings()
    upstreams: dict[str, UpstreamSettings] = {}
    routes: list[RouteSettings] = []
    auth: AuthSettings | None = None
    rate_limiting: RateLimitingSettings | None = None
    cors: CorsSettings | None = None
    transformations: list[TransformationSettings] = []
    compression: CompressionSettings | None = None
    aggregation: AggregatorSettings = AggregatorSettings()
    metrics: MetricsSettings = MetricsSettings()
    cache_store: CacheStoreSettings = CacheStoreSettings()
    idempotency_store: IdempotencyStoreSettings = IdempotencyStoreSettings()
    tunnels: TunnelSettings = TunnelSettings()
    security_headers: dict[str, str] = Field(
        default=DEFAULT_SECURITY_HEADERS,
        description="Added to every response unless the upstream set them ({} for none).",
    )
    servers: list[SeedServer] = Field(default=[], description="Seed 000 form of upstreams.")
    paths: list[SeedPath] = Field(default=[], description="Seed 000 form of routes.")
