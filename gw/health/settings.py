"""Configuration of an upstream's targets, balancing and health (pydantic models).

``gw.upstream.settings.UpstreamSettings`` takes these fields by inheriting
``UpstreamHealthSettings``::

    upstreams:
      orders:
        targets:
          - http://10.0.0.5:8080                     # weight 1
          - {url: "http://10.0.0.9:8080", weight: 19}
        balance: weighted        # round_robin (default) | least_outstanding | weighted | hash
        hash_key: header:X-Tenant   # with balance: hash; client_ip, user, header:NAME, cookie:NAME
        passive: {consecutive_failures: 5, cooldown: 10, max_cooldown: 300,
                  failure_statuses: [502, 503, 504]}
        active: {path: /health, interval: 5, timeout: 2,
                 healthy_threshold: 2, unhealthy_threshold: 3, expect_status: "200-399"}
        breaker: {window: 10, min_requests: 20, failure_ratio: 0.5,
                  open_seconds: 10, half_open_requests: 3}

Passive ejection is on by default (it only reacts to targets that fail again and again).
Active checks and the circuit breaker are off unless configured: a check needs a path the
service answers, and a breaker's thresholds depend on the service's normal error rate; with
passive ejection a dead upstream already answers 503 at once (``no_healthy_target``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from gw.health.balancer import Balancer
from gw.health.breaker import BreakerPolicy
from gw.health.checker import CheckSpec
from gw.health.choice import PassivePolicy
from gw.upstream.tls import TlsClient

_STRICT = ConfigDict(extra="forbid", frozen=True)
Seconds = Annotated[float, Field(gt=0, le=3600)]
Count = Annotated[int, Field(ge=1, le=1000)]

_HASH_KEY = re.compile(r"client_ip|user|(?:header|cookie):[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_STATUS_RANGE = re.compile(r"([1-5][0-9][0-9])(?:-([1-5][0-9][0-9]))?")
# APPSEC: the check path goes on the request line as is: no spaces, no control characters.
_CHECK_PATH = r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*$"


class TargetSettings(BaseModel):
    """One target with a weight: ``{url: http://host:port, weight: 5}``."""

    model_config = _STRICT

    url: str
    weight: int = Field(default=1, ge=0, le=10000, description="Share of traffic; 0 drains.")


def _url_alone(value: object) -> object:
    """Read a plain URL as a target of weight 1."""
    return {"url": value} if isinstance(value, str) else value


# A target is written as a URL or as {url, weight}; errors point at targets[i].weight.
TargetEntry = Annotated[
    TargetSettings,
    BeforeValidator(_url_alone),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string"},
                {
                    "type": "object",
                    "properties": {
                        "url": {"type": "string"},
                        "weight": {"type": "integer", "minimum": 0, "maximum": 10000},
                    },
                    "required": ["url"],
                    "additionalProperties": False,
                },
            ]
        }
    ),
]


class PassiveSettings(BaseModel):
    """Ejection of a target after failures in a row (``passive:``)."""

    model_config = _STRICT

    consecutive_failures: int = Field(
        default=5, ge=0, le=1000, description="Failures in a row that eject; 0 never ejects."
    )
    cooldown: Seconds = Field(default=10.0, description="First ejection; doubles when repeated.")
    max_cooldown: Seconds = 300.0
    failure_statuses: list[Annotated[int, Field(ge=500, le=599)]] = Field(
        default=[502, 503, 504],
        description="Answers that count as failures (besides refused, reset, timed out).",
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.max_cooldown < self.cooldown:
            raise ValueError("max_cooldown must be at least cooldown")
        return self

    def policy(self, probe_timeout: float = 30.0) -> PassivePolicy:
        """Compile into the balancer's policy (``probe_timeout``: connect + read timeout)."""
        return PassivePolicy(
            self.consecutive_failures,
            self.cooldown,
            self.max_cooldown,
            frozenset(self.failure_statuses),
            probe_timeout,
        )


class ActiveSettings(BaseModel):
    """Active health checks (``active:``), run by one worker per host."""

    model_config = _STRICT

    path: str = Field(pattern=_CHECK_PATH, description="Origin-form path requested with GET.")
    interval: Seconds = 5.0
    timeout: Seconds = 2.0
    healthy_threshold: Count = 2
    unhealthy_threshold: Count = 3
    expect_status: str = Field(
        default="200-399", description="Statuses that pass: '200-399', '200,204', '200-299,301'."
    )

    @field_validator("expect_status")
    @classmethod
    def _statuses(cls, value: str) -> str:
        parse_statuses(value)
        return value

    @model_validator(mode="after")
    def _timeout_fits(self) -> Self:
        if self.timeout > self.interval:
            raise ValueError("timeout must not exceed interval")
        return self

    def specs(
        self, upstream: str, urls: Sequence[str], tls: TlsClient | None = None
    ) -> list[CheckSpec]:
        """Compile one check per target URL (``tls``: the upstream's, for https targets)."""
        expect = parse_statuses(self.expect_status)
        return [
            CheckSpec(
                upstream,
                url,
                self.path,
                self.interval,
                self.timeout,
                self.healthy_threshold,
                self.unhealthy_threshold,
                expect,
                tls,
            )
            for url in urls
        ]


class BreakerSettings(BaseModel):
    """The upstream's circuit breaker (``breaker:``); no breaker when absent."""

    model_config = _STRICT

    window: Seconds = Field(default=10.0, description="Rolling window the ratio is taken over.")
    min_requests: int = Field(default=20, ge=1, le=1_000_000)
    failure_ratio: float = Field(default=0.5, gt=0, le=1, description="Opens at this ratio.")
    open_seconds: Seconds = 10.0
    half_open_requests: Count = 3

    def policy(self) -> BreakerPolicy:
        return BreakerPolicy(
            self.window,
            self.min_requests,
            self.failure_ratio,
            self.open_seconds,
            self.half_open_requests,
        )


class UpstreamHealthSettings(BaseModel):
    """The targets, balancing and health fields of one upstream (inherit into its model)."""

    model_config = _STRICT

    targets: list[TargetEntry] = Field(
        min_length=1, description="Base URLs (http://host:port[/base]), or {url, weight}."
    )
    balance: Literal["round_robin", "least_outstanding", "weighted", "hash"] = "round_robin"
    hash_key: str | None = Field(
        default=None,
        description="With balance: hash: client_ip, user, header:NAME or cookie:NAME.",
    )
    passive: PassiveSettings = PassiveSettings()
    active: ActiveSettings | None = None
    breaker: BreakerSettings | None = None

    @field_validator("hash_key")
    @classmethod
    def _hash_key(cls, value: str | None) -> str | None:
        if value is not None and not _HASH_KEY.fullmatch(value):
            raise ValueError("must be client_ip, user, header:NAME or cookie:NAME")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.balance == "hash") != (self.hash_key is not None):
            raise ValueError("hash_key is required with balance: hash, and only there")
        if not any(weight for _, weight in self.weighted_targets()):
            raise ValueError("targets: at least one target needs a weight above 0")
        return self

    def weighted_targets(self) -> list[tuple[str, int]]:
        """Return ``(url, weight)`` per target, as written."""
        return [(t.url, t.weight) for t in self.targets]

    def hash_source(self) -> tuple[str, str] | None:
        """Return ``("client_ip"|"user"|"header"|"cookie", the name or "")``, or None."""
        if self.hash_key is None:
            return None
        kind, _, name = self.hash_key.partition(":")
        return kind, name

    def balancer(self, upstream: str, urls: Sequence[str], probe_timeout: float) -> Balancer:
        """Build the upstream's balancer; ``urls`` are the normalized target URLs, in order.

        Use the same URL strings as the master gave ``state.create``: they key the shared
        state, so every worker (and the operator's snapshot) must spell them alike.
        """
        weights = [weight for _, weight in self.weighted_targets()]
        if len(urls) != len(weights):
            raise ValueError(f"{len(urls)} URLs for {len(weights)} targets")
        return Balancer(
            upstream,
            list(zip(urls, weights, strict=True)),
            balance=self.balance,
            passive=self.passive.policy(probe_timeout),
            breaker=self.breaker.policy() if self.breaker else None,
        )


def parse_statuses(text: str) -> tuple[tuple[int, int], ...]:
    """Parse ``"200-399"`` or ``"200,204,300-399"`` into inclusive ranges.

    Raises:
        ValueError: the text is not such a list.
    """
    ranges = []
    for part in text.split(","):
        found = _STATUS_RANGE.fullmatch(part.strip())
        if not found:
            raise ValueError(f"{part.strip()!r} is not a status or a range like 200-399")
        low = int(found.group(1))
        high = int(found.group(2) or low)
        if high < low:
            raise ValueError(f"{part.strip()!r}: the range is empty")
        ranges.append((low, high))
    return tuple(ranges)
