"""The configuration schema: one set of pydantic models drives validation, the JSON Schema
printed by ``gw schema`` and the documented defaults.

Two input shapes are accepted besides the native one, so that the seed documents load
unchanged: seed 000's ``servers``/``paths`` and seed 003's ``routes`` with ``upstream`` given as
a URL. Both are read by the same models; ``gw.config.assemble`` turns them into the native shape.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gw.auth.settings import AuthSettings, RouteAuth
from gw.cache.settings import CacheStoreSettings, RouteCacheSettings
from gw.health.settings import UpstreamHealthSettings
from gw.observe.metrics import MetricsSettings
from gw.shaping.settings import (
    AggregateSettings,
    AggregatorSettings,
    CompressionSettings,
    TransformationSettings,
)
from gw.upstream.tls import UpstreamTlsSettings

_STRICT = ConfigDict(extra="forbid", frozen=True)
_HOST_NAME = re.compile(r"(\*\.)?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?|\[[0-9A-Fa-f:.]+\]")

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
        for entry in value:
            if entry != "unix":
                ipaddress.ip_network(entry, strict=False)
        return value

    @field_validator("hosts")
    @classmethod
    def _host_names(cls, value: list[str] | None) -> list[str] | None:
        for entry in value or []:
            if not _HOST_NAME.fullmatch(entry):
                raise ValueError(f"{entry!r} is not a host name or '*.' followed by one")
        return value


class RetrySettings(BaseModel):
    """When a failed try is repeated (see gw/core/retry.py for the safety rules)."""

    model_config = _STRICT

    attempts: int = Field(default=2, ge=1, le=5, description="Tries in all, the first included.")
    retry_on: list[Literal["connect_failure", "timeout", "reset", "status"]] = ["connect_failure"]
    statuses: list[int] = [502, 503, 504]
    per_try_timeout: Seconds | None = None
    backoff: float = Field(default=0.025, ge=0, le=5)
    max_retry_after: float = Field(default=1.0, ge=0, le=30)
    budget_ratio: float = Field(default=0.2, ge=0, le=1)
    budget_min_per_second: float = Field(default=3.0, ge=0, le=1000)


class UpstreamSettings(UpstreamHealthSettings):
    """One named upstream service (``upstreams: {name: ...}``): its targets, balancing and
    health (see gw/health/settings.py), timeouts, pool and retries."""

    model_config = _STRICT

    connect_timeout: Seconds = 2.0
    read_timeout: Seconds = 20.0
    pool_size: int = Field(
        default=512,
        ge=1,
        le=4096,
        description="Idle kept-alive connections kept per target, per worker: the cap on the "
        "connections a burst leaves open for the next (Kong's default; idle_timeout closes "
        "them when the burst is over). A lower value closes the connections of a burst above "
        "it, and the next burst connects again.",
    )
    idle_timeout: Seconds = Field(
        default=4.0,
        description="Seconds an idle kept-alive connection may wait for reuse; older ones are "
        "closed. Keep it below the upstream's own keep-alive timeout (often 5 s).",
    )
    max_connections: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="Connections in use at once per target, per worker; a request over it "
        "waits up to connect_timeout for one, then gets 503 upstream_busy. Omit: no cap.",
    )
    tls: UpstreamTlsSettings | None = Field(
        default=None, description="TLS to https targets: CA, client certificate, name."
    )
    preserve_host: bool = Field(
        default=False, description="Send the client's Host instead of the target's."
    )
    retries: RetrySettings = RetrySettings()


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
    upstream: str | None = Field(
        default=None, description="An upstream name, or a URL (seed 003 style)."
    )
    aggregate: AggregateSettings | None = Field(
        default=None, description="Compose one JSON document from several upstreams."
    )
    strip_prefix: str | None = None
    rewrite: PrefixRewrite | None = None
    read_timeout: Seconds | None = None
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

    _methods = field_validator("methods")(_upper_methods)

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

    _method = field_validator("method")(lambda cls, v: (_upper_methods([v]) or [v])[0])


_PER = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


class LimitSettings(BaseModel):
    """One rate limit: seed 003's ``requests_per_second|minute|hour|day`` or ``limit``/``period``.

    ``burst`` is how many requests a fresh key may send at once (default: the limit).
    """

    model_config = _STRICT

    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    requests_per_second: int | None = Field(default=None, gt=0)
    requests_per_minute: int | None = Field(default=None, gt=0)
    requests_per_hour: int | None = Field(default=None, gt=0)
    requests_per_day: int | None = Field(default=None, gt=0)
    limit: int | None = Field(default=None, gt=0)
    period: float | None = Field(default=None, gt=0, le=86400 * 7, description="Seconds.")
    burst: int | None = Field(default=None, gt=0)
    key: str = Field(
        default="client_ip",
        description="client_ip, user, api_key, route, header:NAME, or several joined by '+'",
    )
    when_missing: Literal["client_ip", "skip", "reject"] = Field(
        default="client_ip",
        description="When a request has no user, API key or header for the key: use the "
        "client address in its place, leave the request out of this limit, or refuse it "
        "(401 for user/api_key, 400 for a header).",
    )

    def rate(self) -> tuple[int, float]:
        """Return ``(limit, period_seconds)``; raise ValueError unless exactly one form is set."""
        forms: list[tuple[int, float]] = [
            (n, float(p))
            for unit, p in _PER.items()
            if (n := getattr(self, f"requests_per_{unit}"))
        ]
        if self.limit is not None or self.period is not None:
            if self.limit is None or self.period is None:
                raise ValueError("'limit' and 'period' go together")
            forms.append((self.limit, self.period))
        if len(forms) != 1:
            raise ValueError(
                "give exactly one of requests_per_second/minute/hour/day or limit+period"
            )
        return forms[0]


class OverrideSettings(LimitSettings):
    """Limits for the paths a pattern matches, instead of the default (seed 003 form)."""

    path: str
    methods: list[str] | None = None
    limits: list[LimitSettings] | None = Field(
        default=None, description="Several limits that must all pass (instead of inline ones)."
    )

    _methods = field_validator("methods")(_upper_methods)


class RateLimitingSettings(BaseModel):
    """``rate_limiting:`` in seed 003's form, plus the backend and its failure rule."""

    model_config = _STRICT

    backend: str = Field(
        default="shared",
        description="'shared' (the host's mmap table, exact across workers), redis://... "
        "or redis+cluster://... (a Redis Cluster)",
    )
    on_error: Literal["fail_open", "fail_closed"] = Field(
        default="fail_open",
        description="When the limiter cannot decide in time: admit, or answer 503.",
    )
    decision_timeout_ms: float | None = Field(default=None, gt=0, le=1000)
    default: LimitSettings | None = None
    overrides: list[OverrideSettings] = []


class CorsSettings(BaseModel):
    """``cors:`` globally or on a route (a route's block replaces the global one)."""

    model_config = _STRICT

    allowed_origins: list[str] = Field(
        description="Exact origins ('null' only literally, never with credentials), or ['*']."
    )
    allowed_methods: list[str] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
    allowed_headers: list[str] = ["Authorization", "Content-Type", "X-API-Key", "X-Request-Id"]
    expose_headers: list[str] = ["X-Request-Id", "Retry-After", "X-RateLimit-Remaining"]
    allow_credentials: bool = False
    max_age: int = Field(default=600, ge=0, le=86400)

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin in ("*", "null"):
                continue
            if not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:[0-9]+)?/?", origin):
                raise ValueError(f"{origin!r} is not an origin like https://app.example.com")
        return value

    @model_validator(mode="after")
    def _no_credentials_for_every_site(self) -> CorsSettings:
        # APPSEC: with credentials the allowed origin is echoed; '*' would echo every site's
        # origin, and 'null' is sent by sandboxed iframes and file: pages of every site, so
        # either hands any web page the user's session. Refused at load, never served.
        if not self.allow_credentials:
            return self
        if "*" in self.allowed_origins:
            raise ValueError(
                "allowed_origins ['*'] with allow_credentials: true would let every site "
                "(Origin: null included) read answers with the user's cookies; list the "
                "origins that may (e.g. ['https://app.example.com']), or drop allow_credentials"
            )
        if "null" in self.allowed_origins:
            raise ValueError(
                "'null' in allowed_origins with allow_credentials: true would let any site "
                "(from a sandboxed iframe) read answers with the user's cookies; list the "
                "origins that may, or drop allow_credentials"
            )
        return self


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
    security_headers: dict[str, str] = Field(
        default=DEFAULT_SECURITY_HEADERS,
        description="Added to every response unless the upstream set them ({} for none).",
    )
    servers: list[SeedServer] = Field(default=[], description="Seed 000 form of upstreams.")
    paths: list[SeedPath] = Field(default=[], description="Seed 000 form of routes.")
