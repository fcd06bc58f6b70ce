"""The ``upstreams:`` models: targets (with gw.health's balancing and health), timeouts, the
connection pool, retries and TLS. ``gw.upstream.compile`` turns them into ``UpstreamSpec``s."""

from __future__ import annotations

import os
import re
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gw.health.settings import UpstreamHealthSettings

_STRICT = ConfigDict(extra="forbid", frozen=True)
_DNS_NAME = re.compile(
    r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*"
)
Seconds = Annotated[float, Field(gt=0, le=3600)]


class UpstreamTlsSettings(BaseModel):
    """TLS to the upstream's https targets (``tls:``); see gw/upstream/tls.py."""

    model_config = _STRICT

    ca_file: str | None = Field(
        default=None,
        description="PEM file of the CA certificates trusted for this upstream, instead of "
        "the system's store (nginx proxy_ssl_trusted_certificate). Absolute path.",
    )
    client_cert: str | None = Field(
        default=None,
        description="PEM certificate (chain) the gateway presents to the upstream (mutual "
        "TLS; nginx proxy_ssl_certificate). Absolute path; needs client_key.",
    )
    client_key: str | None = Field(
        default=None,
        description="Unencrypted PEM private key of client_cert (nginx "
        "proxy_ssl_certificate_key). Absolute path; keep it readable by the gw user only.",
    )
    server_name: str | None = Field(
        default=None,
        description="The DNS name the upstream's certificate must carry, also sent as SNI "
        "(nginx proxy_ssl_name). Default: the target's host. The Host header is unchanged.",
    )
    verify: bool = Field(
        default=True,
        description="Check the upstream's certificate and name (nginx proxy_ssl_verify, "
        "which is off by default there). false: encrypted but not authenticated; logged.",
    )

    @field_validator("ca_file", "client_cert", "client_key")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        # APPSEC/ops: workers load a copy of the config from the runtime directory, and
        # `gw check` may run elsewhere: a relative path would name different files.
        if value is not None and not os.path.isabs(value):
            raise ValueError(f"{value!r} must be an absolute path")
        return value

    @field_validator("server_name")
    @classmethod
    def _dns_name(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 253 or not _DNS_NAME.fullmatch(value)):
            raise ValueError(f"{value!r} is not a DNS name like orders.internal")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together: give both or neither")
        if not self.verify and (self.ca_file is not None or self.server_name is not None):
            raise ValueError("ca_file and server_name only apply with verify: true")
        return self


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
    pool_size: int = Field(default=16, ge=1, le=1024, description="Kept-alive connections.")
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
