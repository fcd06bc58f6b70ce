"""The ``cors:`` model, global or on a route; ``CorsPolicy.compile`` (``gw.cors``) turns it
into the policy served."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_STRICT = ConfigDict(extra="forbid", frozen=True)


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
