"""The admit stage: which rate limits apply to a request, whose bucket it draws from, and
what the client is told (429 with seed 003's body, ``X-RateLimit-*`` and IETF ``RateLimit``).

Compiled once from ``rate_limiting:``; the limiter backend (the host's shared mmap table, or
Redis) is opened lazily in each worker process.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gw.errors import ClientError, ConfigError, GatewayError
from gw.forwarding import client_key
from gw.incident import IncidentLog
from gw.limits import Decision, Limiter, LimiterUnavailable, Rate, StripeFrozen
from gw.limits.table import SharedTable
from gw.routing import Route, RouteTable
from gw.settings import LimitSettings, RateLimitingSettings

log = logging.getLogger("gw.ratelimit")

_KEY_KINDS = ("client_ip", "user", "api_key", "route")


@dataclass(frozen=True)
class Limit:
    """One compiled limit: its name (for headers and logs), rate and key recipe."""

    name: str
    rate: Rate
    key: tuple[str, ...]


@dataclass(frozen=True)
class Requester:
    """What a key can be made of, for one request."""

    client_ip: str
    route: str
    headers: Mapping[str, str]  # the upstream-bound headers, lower-case names
    subject: str | None = None
    api_key: str | None = None


class RateLimited(ClientError):
    status = 429
    code = "rate_limit_exceeded"

    def to_dict(self, request_id: str | None = None) -> dict[str, object]:
        # Seed 003's body, exactly: error, message, retry_after (the id is in X-Request-Id).
        return {"error": self.code, "message": self.message, **self.extra}


class LimiterDown(GatewayError):
    status = 503
    code = "rate_limiter_unavailable"


class Admission:
    """Decide, per request, whether every applicable limit still has room."""

    def __init__(self, settings: RateLimitingSettings, open_limiter: Callable[[], Limiter]) -> None:
        self.fail_open = settings.on_error == "fail_open"
        self.default = _compile_limits("rate_limiting.default", settings.default, None)
        self.overrides = _compile_overrides(settings)
        self._open_limiter = open_limiter
        self._limiter: Limiter | None = None
        self._pid = -1
        # One warning per outage of the backend, with counts (not one per request).
        self._incidents = IncidentLog(log, "rate limiter")
        # Told every decision as (limit name, allowed|rejected|failed_open|failed_closed).
        self.observe: Callable[[str, str], None] = _ignore

    def limits_for(self, method: str, path: str) -> tuple[Limit, ...]:
        """Return the limits for this request: the most specific override's, or the default."""
        if self.overrides is not None:
            try:
                return self.overrides.match(method, path).route.payload
            except GatewayError:
                pass
        return self.default

    def admit(self, limits: Sequence[Limit], who: Requester) -> list[tuple[str, str]]:
        """Draw one token from each limit's bucket; return the headers for the response.

        Raises:
            RateLimited: a limit has no room (the request must not reach the upstream).
            LimiterDown: the limiter cannot decide in time and the rule is fail_closed.
        """
        tightest: tuple[Limit, Decision] | None = None
        for limit in limits:
            decision = self._check(limit, who)
            if decision is None:
                continue
            self.observe(limit.name, "allowed" if decision.allowed else "rejected")
            if not decision.allowed:
                raise _rejection(limit, decision)
            if tightest is None or decision.remaining < tightest[1].remaining:
                tightest = (limit, decision)
        return quota_headers(*tightest) if tightest else []

    def _check(self, limit: Limit, who: Requester) -> Decision | None:
        try:
            decision = self._backend().check(bucket_key(limit, who), limit.rate)
        except LimiterUnavailable as ex:
            # A stripe frozen by a stopped holder is refused whatever on_error says: admitting
            # uncounted requests is exactly the over-admission (gw.limits.locks).
            frozen = isinstance(ex, StripeFrozen)
            if self.fail_open and not frozen:
                self._incidents.failed(ex, "admitting (fail_open)")
                self.observe(limit.name, "failed_open")
                return None
            rule = "stopped lock holder" if frozen else "fail_closed"
            self._incidents.failed(ex, f"refusing ({rule})")
            self.observe(limit.name, "failed_closed")
            raise LimiterDown(
                "the rate limiter cannot decide right now; try again shortly",
                headers={"Retry-After": "1"},
            ) from None
        self._incidents.succeeded()
        return decision

    def limit_named(self, name: str) -> Limit | None:
        """Return the compiled limit called ``name`` (for the operator CLI)."""
        every = list(self.default)
        if self.overrides is not None:
            every += [limit for route in self.overrides.ordered() for limit in route.payload]
        return next((limit for limit in every if limit.name == name), None)

    def open_backend(self) -> Limiter:
        """Open this process's limiter backend (the workers do it lazily)."""
        return self._backend()

    def table_stats(self) -> dict[str, Any]:
        """The shared table's occupancy (for metrics); empty for other backends."""
        backend = self._backend()
        return backend.stats() if isinstance(backend, SharedTable) else {}

    def _backend(self) -> Limiter:
        if self._pid != os.getpid() or self._limiter is None:
            self._limiter = self._open_limiter()
            self._pid = os.getpid()
        return self._limiter


def _ignore(policy: str, decision: str) -> None:
    pass


def bucket_key(limit: Limit, who: Requester) -> str:
    """Return the bucket key: the limit's name and the request's values for its key recipe."""
    return limit.name + "|" + "|".join(_key_part(part, who) for part in limit.key)


def _key_part(part: str, who: Requester) -> str:
    if part == "client_ip":
        return "ip:" + client_key(who.client_ip)
    if part == "route":
        return "route:" + who.route
    if part == "user":
        return "user:" + who.subject if who.subject else "ip:" + client_key(who.client_ip)
    if part == "api_key":
        return "key:" + who.api_key if who.api_key else "ip:" + client_key(who.client_ip)
    # APPSEC: header keys read the headers the gateway sends upstream, after client copies of
    # gateway-owned headers (X-User-Id, ...) were stripped and verified identity was added, so
    # a client cannot pick its own bucket by sending the header; absent, the client IP counts.
    name = part[len("header:") :].lower()
    value = who.headers.get(name)
    return f"h:{name}={value}" if value else "ip:" + client_key(who.client_ip)


def quota_headers(limit: Limit, decision: Decision) -> list[tuple[str, str]]:
    """X-RateLimit-* (seed 003) and the IETF RateLimit / RateLimit-Policy fields."""
    reset_in = math.ceil(decision.reset_after)
    period = limit.rate.period
    window = int(period) if float(period).is_integer() else period
    return [
        ("X-RateLimit-Limit", str(limit.rate.limit)),
        ("X-RateLimit-Remaining", str(decision.remaining)),
        ("X-RateLimit-Reset", str(int(time.time()) + reset_in)),
        ("RateLimit-Policy", f'"{limit.name}";q={limit.rate.limit};w={window}'),
        ("RateLimit", f'"{limit.name}";r={decision.remaining};t={reset_in}'),
    ]


def _rejection(limit: Limit, decision: Decision) -> RateLimited:
    retry = (
        max(1, math.ceil(decision.retry_after)) if math.isfinite(decision.retry_after) else 86400
    )
    headers = dict(quota_headers(limit, decision))
    headers["Retry-After"] = str(retry)
    return RateLimited(
        f"Too many requests. Retry after {retry} seconds.",
        headers=headers,
        extra={"retry_after": retry},
    )


def _compile_overrides(settings: RateLimitingSettings) -> RouteTable[tuple[Limit, ...]] | None:
    if not settings.overrides:
        return None
    routes = []
    problems: list[str] = []
    for i, override in enumerate(settings.overrides):
        where = f"rate_limiting.overrides[{i}]"
        try:
            limits = _compile_limits(where, override, override.limits)
        except ConfigError as ex:
            problems += ex.problems
            continue
        methods = frozenset(override.methods) if override.methods else None
        routes.append(Route(name=where, pattern=override.path, payload=limits, methods=methods))
    if problems:
        raise ConfigError(problems)
    try:
        return RouteTable(routes)
    except ConfigError as ex:
        raise ConfigError([f"rate_limiting.overrides: {p}" for p in ex.problems]) from None
    except ValueError as ex:
        raise ConfigError([f"rate_limiting.overrides: {ex}"]) from None


def _compile_limits(
    where: str, inline: LimitSettings | None, several: Sequence[LimitSettings] | None
) -> tuple[Limit, ...]:
    if inline is None:
        return ()
    if several is not None:
        if any(v is not None for k, v in inline if k.startswith("requests_per") or k == "limit"):
            raise ConfigError([f"{where}: give either 'limits' or an inline limit, not both"])
        return tuple(_limit(f"{where}.limits[{i}]", s) for i, s in enumerate(several))
    return (_limit(where, inline),)


def _limit(where: str, settings: LimitSettings) -> Limit:
    try:
        count, period = settings.rate()
        rate = Rate(count, period, settings.burst)
        key = _parse_key(settings.key)
    except ValueError as ex:
        raise ConfigError([f"{where}: {ex}"]) from None
    return Limit(settings.name or where.removeprefix("rate_limiting."), rate, key)


def _parse_key(text: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in text.split("+"))
    for part in parts:
        if part in _KEY_KINDS:
            continue
        if part.startswith("header:") and len(part) > len("header:"):
            continue
        raise ValueError(
            f"key {text!r}: {part!r} is not one of client_ip, user, api_key, route, header:NAME"
        )
    return parts
