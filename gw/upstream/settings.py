"""The transport's own settings models: retries and TLS to upstreams. The ``upstreams:`` block
that joins them with gw.health's balancing and health checks is ``gw.config.upstreams``."""

from __future__ import annotations

import os
import re
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

STRICT = ConfigDict(extra="forbid", frozen=True)
_DNS_NAME = re.compile(
    r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*"
)
Seconds = Annotated[float, Field(gt=0, le=3600)]


class UpstreamTlsSettings(BaseModel):
    """TLS to the upstream's https targets (``tls:``); see gw/upstream/tls.py."""

    model_config = STRICT

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

    model_config = STRICT

    attempts: int = Field(default=2, ge=1, le=5, description="Tries in all, the first included.")
    retry_on: list[Literal["connect_failure", "timeout", "reset", "status"]] = [
        "connect_failure",
        "reset",
    ]
    statuses: list[int] = [502, 503, 504]
    per_try_timeout: Seconds | None = None
    backoff: float = Field(default=0.025, ge=0, le=5)
    max_retry_after: float = Field(default=1.0, ge=0, le=30)
    budget_ratio: float = Field(default=0.2, ge=0, le=1)
    budget_min_per_second: float = Field(default=3.0, ge=0, le=1000)
