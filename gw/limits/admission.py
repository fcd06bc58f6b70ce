"""The admit stage: which rate limits apply to a request, whose bucket it draws from, and
what the client is told (429 with seed 003's body, ``X-RateLimit-*`` and IETF ``RateLimit``).

Compiled once from ``rate_limiting:``; the limiter backend (the host's shared mmap table, or
Redis) is opened lazily in each worker process.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from gw.core.forwarding import client_key
from gw.core.request import Request
from gw.core.routes import Route
from gw.core.routing import RouteTable
from gw.errors import ClientError, ConfigError, GatewayError, Unauthorized
from gw.host import process
from gw.limits import Decision, Limiter, LimiterUnavailable, Rate, StripeFrozen
from gw.limits.settings import LimitSettings, RateLimitingSettings
from gw.limits.table import SharedTable
from gw.observe.incident import IncidentLog
from gw.observe.sampled import SampledLog

log = logging.getLogger("gw.ratelimit")
# One line per would-be rejection of a shadow limit, at most PER_SECOND per limit per worker.
shadow_log = SampledLog(logging.getLogger("gw.audit"))

_KEY_KINDS = ("client_ip", "user", "api_key", "route")
_ALWAYS_PRESENT = ("client_ip", "route")


@dataclass(frozen=True)
class Limit:
    """One compiled limit: its name (for headers and logs), rate and key recipe.

    ``when_missing`` says what happens when a request lacks a part of the key (no user, no
    API key, no such header): ``client_ip`` puts the client address in that part's place
    (the default), ``skip`` leaves the request out of this limit, ``reject`` refuses it.

    A ``shadow`` limit is decided (and its bucket drawn from) but never refuses: its
    would-be rejections are counted and logged; ``shadow_headers`` sends its quota headers.

    Warning:
        With ``skip``, a caller escapes the limit by not presenting the part: keep another
        limit (such as ``client_ip``) that every request meets.
    """

    name: str
    rate: Rate
    key: tuple[str, ...]
    when_missing: str = "client_ip"
    shadow: bool = False
    shadow_headers: bool = False

    @functools.cached_property
    def quota(self) -> tuple[str, str, str]:
        """The parts of its quota headers that never change: X-RateLimit-Limit's value,
        RateLimit-Policy's value and the head of RateLimit's (PERF: made once, not per
        request)."""
        period = self.rate.period
        window = int(period) if float(period).is_integer() else period
        name = f'"{self.name}"'
        return str(self.rate.limit), f"{name};q={self.rate.limit};w={window}", name

    @functools.cached_property
    def admitted(self) -> tuple[str, str, str]:
        """The labels of its usual decision, an enforced admission (``Admission.observe``)."""
        return self.name, "allowed", "enforce"

    @functools.cached_property
    def keyer(self) -> Callable[[Request, str], str | None] | None:
        """``bucket_key`` of this limit for a request on a route, read from the request itself
        (the same key, None and refusal), for a key of one part that is not a header; None
        for every other recipe.

        PERF: the usual limit is keyed on one part (a user, an address); its key is then one
        concatenation, with no ``Requester`` made and no loop over the recipe's parts.
        """
        if len(self.key) != 1 or self.key[0] not in _KEY_KINDS:
            return None
        value_of, head = _REQUEST_PARTS[self.key[0]], self.name + "|"

        def key(request: Request, route: str) -> str | None:
            value = value_of(request, route)
            if value is not None:
                return head + value
            # The part is absent: ``when_missing`` decides, as for any recipe (no header part
            # is read, so the upstream-bound headers are not needed).
            return bucket_key(self, Requester.of(request, route, {}))

        return key


def _user(request: Request, route: str) -> str | None:
    identity = request.identity
    return "user:" + identity.principal if identity is not None and identity.principal else None


def _api_key(request: Request, route: str) -> str | None:
    identity = request.identity
    if identity is not None and identity.method == "api_key" and identity.key_id:
        return "key:" + identity.key_id
    return None


# A request's value for each part of a key that is not a header, as ``_key_part`` gives it from
# the request's ``Requester`` (None: the request has none).
_REQUEST_PARTS: dict[str, Callable[[Request, str], str | None]] = {
    "client_ip": lambda request, route: "ip:" + client_key(request.client.ip),
    "route": lambda request, route: "route:" + route,
    "user": _user,
    "api_key": _api_key,
}


class Requester(NamedTuple):
    """What a key can be made of, for one request.

    PERF: a NamedTuple is built in C; a frozen dataclass pays one ``object.__setattr__`` per
    field (2.6 against 0.7 µs here), once per rate-limited request.
    """

    client_ip: str
    route: str
    headers: Mapping[str, str]  # the upstream-bound headers, names in any case
    subject: str | None = None
    api_key: str | None = None
    request_id: str | None = None  # for the shadow log line only

    @classmethod
    def of(cls, request: Request, route: str, headers: Mapping[str, str]) -> Requester:
        """The requester of ``request`` on ``route``; ``headers``: the upstream-bound ones."""
        identity = request.identity
        return cls(
            client_ip=request.client.ip,
            route=route,
            headers=headers,
            subject=identity.principal if identity else None,
            api_key=identity.key_id if identity and identity.method == "api_key" else None,
            request_id=request.request_id,
        )


class RateLimited(ClientError):
    status = 429
    code = "rate_limit_exceeded"

    def to_dict(self, request_id: str | None = None) -> dict[str, object]:
        # Seed 003's body, exactly: error, message, retry_after (the id is in X-Request-Id).
        return {"error": self.code, "message": self.message, **self.extra}


class MissingLimitKey(ClientError):
    """A header a rate limit is keyed on is absent and the limit says ``reject`` (400)."""

    code = "missing_header"


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
        # Told every decision as (limit name, allowed|rejected|failed_open|failed_closed,
        # enforce|shadow). PERF: one tuple, so that the metrics can count it with no Python
        # frame (``Metrics.count_ratelimit``).
        self.observe: Callable[[tuple[str, str, str]], None] = _ignore

    def limits_for(self, method: str, path: str) -> tuple[Limit, ...]:
        """Return the limits for this request: the most specific override's, or the default."""
        if self.overrides is not None:
            try:
                return self.overrides.match(method, path).route.payload
            except GatewayError:
                pass
        return self.default

    def admit_request(
        self, request: Request, route: str, headers: Mapping[str, str]
    ) -> list[tuple[str, str]]:
        """``admit`` for ``request`` on ``route`` by the limits that apply to it (``headers``:
        the upstream-bound ones, for limits keyed on a header); the same headers and refusals.
        """
        limits = self.limits_for(request.method, request.path)
        if not limits:
            return []
        limit = limits[0]
        if len(limits) == 1 and not limit.shadow and limit.keyer is not None:
            # PERF: its key without a Requester (see Limit.keyer)
            return self._admit_key(limit, limit.keyer(request, route))
        return self.admit(limits, Requester.of(request, route, headers))

    def admit(self, limits: Sequence[Limit], who: Requester) -> list[tuple[str, str]]:
        """Draw one token from every applicable limit's bucket, all together; return headers.

        The limits are decided as one: a request every limit admits takes one token from
        each, a request any limit refuses takes none, and the order of the limits never
        changes the outcome. The 429 describes the refusing limit with the longest wait.
        Shadow limits are then decided as one among themselves, for the requests the
        enforced limits admitted (``_shadow``); they never refuse.

        Raises:
            RateLimited: a limit has no room (the request must not reach the upstream).
            Unauthorized, MissingLimitKey: a limit with ``when_missing: reject`` lacks its key.
            LimiterDown: the limiter cannot decide in time and the rule is fail_closed.
        """
        if len(limits) == 1 and not limits[0].shadow:
            return self._admit_key(limits[0], bucket_key(limits[0], who))
        keyed: list[tuple[Limit, str]] = []
        shadows: list[Limit] = []
        for limit in limits:  # PERF: one pass, as most routes have one enforced limit
            if limit.shadow:
                shadows.append(limit)
            elif (key := bucket_key(limit, who)) is not None:
                keyed.append((limit, key))
        decisions = self._decide(keyed) if keyed else []
        if decisions is None:  # fail_open: admitted uncounted, and so are the shadow limits
            return []
        outcomes = [
            (limit, decision) for (limit, _), decision in zip(keyed, decisions, strict=True)
        ]
        refused = [(limit, decision) for limit, decision in outcomes if not decision.allowed]
        for limit, _ in refused or outcomes:
            self.observe((limit.name, "rejected" if refused else "allowed", "enforce"))
        if refused:
            raise _rejection(*max(refused, key=_longest_wait))
        if shadows:
            outcomes += self._shadow(shadows, who)
        if len(outcomes) > 1:
            return quota_headers(*min(outcomes, key=_fewest_remaining))
        # PERF: min() calls its key even for one outcome, the usual case (0.5 µs here).
        return quota_headers(*outcomes[0]) if outcomes else []

    def _admit_key(self, limit: Limit, key: str | None) -> list[tuple[str, str]]:
        """``admit`` for one enforced limit, the usual route's, whose bucket is ``key`` (None:
        the limit skips this request): the same decision, headers, refusal and counts.

        PERF: the bucket is asked with ``check`` (which every backend defines as
        ``check_all`` of one bucket), without the lists that join several limits' decisions:
        about 150 bytecodes fewer a rate-limited request.
        """
        if key is None:
            return []
        try:
            decision = self._backend().check(key, limit.rate)
        except LimiterUnavailable as ex:
            self._unavailable(ex, (limit,))  # raises, unless the rule is fail_open
            return []
        self._incidents.succeeded()
        if not decision.allowed:
            self.observe((limit.name, "rejected", "enforce"))
            raise _rejection(limit, decision)
        self.observe(limit.admitted)  # PERF: labels made once (no tuple per request)
        return quota_headers(limit, decision)

    def _shadow(self, limits: Sequence[Limit], who: Requester) -> list[tuple[Limit, Decision]]:
        """Decide the shadow limits as one; count, log, never raise; return the outcomes
        whose headers the client is shown (``shadow_headers``)."""
        keyed: list[tuple[Limit, str]] = []
        for limit in limits:
            try:
                key = bucket_key(limit, who)
            except ClientError as ex:  # when_missing: reject would refuse it
                self._would_reject(limit, who, None, ex.code)
                continue
            if key is not None:
                keyed.append((limit, key))
        if not keyed:
            return []
        try:
            # PERF: a second backend call (lock or round trip), made only for requests that
            # have shadow limits; one call for both would let a shadow refusal stop the
            # enforced limits from taking their tokens.
            decisions = self._backend().check_all([(key, limit.rate) for limit, key in keyed])
        except LimiterUnavailable as ex:
            # APPSEC: a shadow limit never refuses, whatever on_error says or a frozen stripe.
            self._incidents.failed(ex, "admitting (shadow limits never refuse)")
            for limit, _ in keyed:
                self.observe((limit.name, "failed_open", "shadow"))
            return []
        self._incidents.succeeded()
        outcomes = list(zip([limit for limit, _ in keyed], decisions, strict=True))
        refused = [(limit, decision) for limit, decision in outcomes if not decision.allowed]
        for limit, _ in refused or outcomes:
            self.observe((limit.name, "rejected" if refused else "allowed", "shadow"))
        for limit, decision in refused:
            self._would_reject(limit, who, decision, RateLimited.code)
        return [(limit, decision) for limit, decision in outcomes if limit.shadow_headers]

    def _would_reject(
        self, limit: Limit, who: Requester, decision: Decision | None, code: str
    ) -> None:
        if decision is None:
            self.observe((limit.name, "rejected", "shadow"))
        line: dict[str, Any] = {
            "event": "ratelimit_shadow",
            "decision": "would_reject",
            "limit": limit.name,
            "code": code,
            "route": who.route,
            "client": who.client_ip,
            "request_id": who.request_id,
        }
        if decision is not None and math.isfinite(decision.retry_after):
            line["retry_after"] = max(1, math.ceil(decision.retry_after))
        shadow_log.write(limit.name, line)

    def _decide(self, keyed: Sequence[tuple[Limit, str]]) -> list[Decision] | None:
        """Ask the backend about every bucket at once; None means admit (fail_open)."""
        try:
            decisions = self._backend().check_all([(key, limit.rate) for limit, key in keyed])
        except LimiterUnavailable as ex:
            self._unavailable(ex, [limit for limit, _ in keyed])
            return None
        self._incidents.succeeded()
        return decisions

    def _unavailable(self, ex: LimiterUnavailable, limits: Sequence[Limit]) -> None:
        """Apply the rule for a backend that could not decide: return to admit (fail_open),
        or raise LimiterDown."""
        # A stripe frozen by a stopped holder is refused whatever on_error says: admitting
        # uncounted requests is exactly the over-admission (gw.host.locks).
        frozen = isinstance(ex, StripeFrozen)
        admit = self.fail_open and not frozen
        rule = "stopped lock holder" if frozen else ("fail_open" if admit else "fail_closed")
        self._incidents.failed(ex, f"{'admitting' if admit else 'refusing'} ({rule})")
        for limit in limits:
            self.observe((limit.name, "failed_open" if admit else "failed_closed", "enforce"))
        if not admit:
            raise LimiterDown(
                "the rate limiter cannot decide right now; try again shortly",
                headers={"Retry-After": "1"},
            ) from None

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
        if self._pid != process.pid() or self._limiter is None:
            self._limiter = self._open_limiter()
            self._pid = process.pid()
        return self._limiter


def _ignore(decision: tuple[str, str, str]) -> None:
    pass


def explain_bucket(limit: Limit, who: Requester) -> tuple[str, str | None, ClientError | None]:
    """Say which bucket ``who`` gets under ``limit``, or why it gets none (for ``gw explain``):
    the line, the bucket key (None: skipped or refused) and the refusal, if the limit refuses
    (a shadow limit never does).
    """
    shadow = ", shadow: never refuses" if limit.shadow else ""
    rule = (
        f"{limit.name} ({limit.rate.limit}/{limit.rate.period:g}s key {'+'.join(limit.key)}"
        f"{shadow})"
    )
    try:
        key = bucket_key(limit, who)
    except ClientError as ex:
        if limit.shadow:
            return f"{rule}: would be refused (shadow), {ex.status} {ex.code}: {ex}", None, None
        return f"{rule}: refused, {ex.status} {ex.code}: {ex}", None, ex
    missing = ", ".join(part for part in limit.key if _key_part(part, who) is None)
    if key is None:
        return f"{rule}: skipped (no {missing}; when_missing: skip)", None, None
    if missing:
        return f"{rule}: bucket {key} (no {missing}: the client address stands in)", key, None
    return f"{rule}: bucket {key}", key, None


def _longest_wait(outcome: tuple[Limit, Decision]) -> tuple[float, str]:
    return outcome[1].retry_after, outcome[0].name


def _fewest_remaining(outcome: tuple[Limit, Decision]) -> tuple[int, str]:
    return outcome[1].remaining, outcome[0].name


def bucket_key(limit: Limit, who: Requester) -> str | None:
    """Return the bucket key: the limit's name and the request's values for its key recipe.

    Returns None when a part is missing and the limit says ``when_missing: skip`` (the
    limit does not apply to this request).

    Raises:
        Unauthorized: ``when_missing: reject`` and the caller lacks the user or API key.
        MissingLimitKey: ``when_missing: reject`` and a keyed header is absent.
    """
    values = []
    for part in limit.key:
        value = _key_part(part, who)
        if value is None:
            # APPSEC: the fallback is the operator's explicit choice per limit; skip trusts
            # that another limit covers callers without the part (see Limit's warning).
            if limit.when_missing == "skip":
                return None
            if limit.when_missing == "reject":
                raise _missing(limit, part)
            value = "ip:" + client_key(who.client_ip)
        values.append(value)
    return limit.name + "|" + "|".join(values)


def _key_part(part: str, who: Requester) -> str | None:
    """Return this request's value for one part of a key, or None when it has none."""
    if part == "client_ip":
        return "ip:" + client_key(who.client_ip)
    if part == "route":
        return "route:" + who.route
    if part == "user":
        return "user:" + who.subject if who.subject else None
    if part == "api_key":
        return "key:" + who.api_key if who.api_key else None
    # APPSEC: header keys read the headers the gateway sends upstream, after client copies of
    # gateway-owned headers (X-User-Id, ...) were stripped and verified identity was added, so
    # a client cannot pick its own bucket by sending the header.
    name = part[len("header:") :].lower()
    value = _header(who.headers, name)
    return f"h:{name}={value}" if value else None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header ``name`` (lower case) in ``headers``, whatever its spelling (the
    last, if two spellings were there).

    PERF: looked up only by the limits keyed on a header; the requester keeps the headers as
    they came, not a lower-cased copy made for every request.
    """
    value = None
    for key, candidate in headers.items():
        if key.lower() == name:
            value = candidate
    return value


def _missing(limit: Limit, part: str) -> ClientError:
    """The refusal for a request that lacks ``part`` of a ``when_missing: reject`` limit.

    A missing identity is an authentication problem (401, auth's own error shape and
    challenge): presenting the right credential fixes it. A missing header is a malformed
    request (400). Never 429: waiting would not help.
    """
    if part in ("user", "api_key"):
        needed = "an authenticated user" if part == "user" else "an API key"
        return Unauthorized(
            f"this request needs {needed} (rate limit {limit.name!r})",
            reason="missing_rate_limit_identity",
        )
    header = part[len("header:") :]
    return MissingLimitKey(f"the {header} header is required (rate limit {limit.name!r})")


def quota_headers(limit: Limit, decision: Decision) -> list[tuple[str, str]]:
    """X-RateLimit-* (seed 003) and the IETF RateLimit / RateLimit-Policy fields."""
    reset_in = math.ceil(decision.reset_after)
    remaining = str(decision.remaining)
    most, policy, quoted_name = limit.quota
    return [
        ("X-RateLimit-Limit", most),
        ("X-RateLimit-Remaining", remaining),
        ("X-RateLimit-Reset", str(int(time.time()) + reset_in)),
        ("RateLimit-Policy", policy),
        ("RateLimit", f"{quoted_name};r={remaining};t={reset_in}"),
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
    when_missing = settings.when_missing
    if when_missing != "client_ip" and all(part in _ALWAYS_PRESENT for part in key):
        raise ConfigError(
            [
                f"{where}.when_missing: {when_missing!r} never applies: every part of key "
                f"{settings.key!r} is always present (it matters for user, api_key, header:NAME)"
            ]
        )
    if settings.shadow_headers and settings.mode != "shadow":
        raise ConfigError([f"{where}.shadow_headers: needs mode: shadow"])
    name = settings.name or where.removeprefix("rate_limiting.")
    shadow = settings.mode == "shadow"
    return Limit(name, rate, key, when_missing, shadow, settings.shadow_headers)


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
