"""The ``rate_limiting:`` models (seed 003's form, plus the backend and its failure rule);
``gw.limits.compile`` turns them into the ``Admission`` stage."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gw.core.methods import upper_methods
from gw.host import redis as host_redis

_STRICT = ConfigDict(extra="forbid", frozen=True)

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
    mode: Literal["enforce", "shadow"] = Field(
        default="enforce",
        description="shadow: count and decide, report would-be rejections in metrics "
        '(mode="shadow") and a sampled gw.audit line, but never refuse a request.',
    )
    shadow_headers: bool = Field(
        default=False,
        description="With mode: shadow, send this limit's X-RateLimit-*/RateLimit headers "
        "as an enforced limit would (off: clients see nothing of a shadow limit).",
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

    _methods = field_validator("methods")(upper_methods)


class RateLimitingSettings(BaseModel):
    """``rate_limiting:`` in seed 003's form, plus the backend and its failure rule."""

    model_config = _STRICT

    backend: str = Field(
        default="shared",
        description="'shared' (the host's mmap table, exact across workers), redis://..., "
        "redis+cluster://... (a Redis Cluster) or redis+sentinel://h1:26379,h2:26379/"
        "service[/db] (the primary Redis Sentinel names)",
    )
    on_error: Literal["fail_open", "fail_closed"] = Field(
        default="fail_open",
        description="When the limiter cannot decide in time: admit, or answer 503.",
    )
    decision_timeout_ms: float | None = Field(default=None, gt=0, le=1000)
    default: LimitSettings | None = None
    overrides: list[OverrideSettings] = []

    @field_validator("backend")
    @classmethod
    def _check_backend(cls, backend: str) -> str:
        """Refuse a Sentinel URL gw cannot parse (other schemes: ``compile_admission``)."""
        host_redis.check_url(backend)
        return backend
