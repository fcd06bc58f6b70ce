"""Every decision the gateway would take for one request, in pipeline order (see the package).

Each ``_stage`` function reads the ``Config`` and the one ``Request`` that the gateway's own
ingress built, and returns a ``Stage``; one that ends the request sets ``Walk.answer``.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gw.auth import AuthUnavailable, Forbidden
from gw.auth.identity import UnsafeClaim, build_identity
from gw.auth.throttle import key_for as throttle_key
from gw.cache.stage import key_for as cache_key_for
from gw.config.assemble import Config, RouteSpec
from gw.core.conditions import Condition, RequestView
from gw.core.forwarding import TrustedProxies
from gw.core.headers import GATEWAY_OWNED
from gw.core.hosts import HostAllowList
from gw.core.identity import Identity
from gw.core.ingress import exchange_from, request_from
from gw.core.nearest import nearest
from gw.core.outgoing import upstream_headers
from gw.core.paths import encode_path
from gw.core.request import Request
from gw.core.routing import RouteTable
from gw.cors import CorsRefused, apply, is_preflight
from gw.errors import ClientError, GatewayError, RouteNotFound
from gw.limits import Decision, Rate
from gw.limits.admission import Requester, explain_bucket
from gw.pipeline import choose_route
from gw.shaping.compress import accepts_gzip
from gw.shaping.stage import Shaper


@dataclass(frozen=True)
class Probe:
    """The request to explain, and who sends it."""

    method: str
    target: str
    host: str | None = None
    headers: Sequence[tuple[str, str]] = ()
    cookies: Sequence[str] = ()  # name=value
    client_ip: str = "127.0.0.1"  # the socket peer; X-Forwarded-For in headers is resolved
    token: str | None = None  # sent as Authorization: Bearer, verified as a worker would
    claims: Mapping[str, Any] | None = None  # an identity to assume instead (not verified)
    api_key_id: str | None = None  # with claims: the caller is that API key


class Live(Protocol):
    """The running gateway's state, when one serves the config (``gw explain`` finds it)."""

    def peek(self, key: str, rate: Rate) -> Decision | None: ...

    def targets(self, upstream: str) -> Mapping[str, str]: ...


@dataclass
class Stage:
    """One decision: a summary line, detail lines, and the same facts as data."""

    name: str
    summary: str
    details: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Explanation:
    stages: list[Stage]
    answer: str | None  # how the gateway answers itself, or None: forwarded upstream

    def render(self) -> str:
        lines = []
        for stage in self.stages:
            lines.append(f"{stage.name}: {stage.summary}")
            lines += [f"  {line}" for line in stage.details]
        lines.append(f"answer: {self.answer or 'forwarded upstream, its answer relayed'}")
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        stages = [
            {"stage": s.name, "summary": s.summary, "details": s.details, **s.data}
            for s in self.stages
        ]
        return {"stages": stages, "answer": self.answer, "forwarded": self.answer is None}


@dataclass
class _Walk:
    config: Config
    probe: Probe
    live: Live | None
    stages: list[Stage] = field(default_factory=list)
    answer: str | None = None
    request: Request | None = None
    spec: RouteSpec | None = None
    headers: dict[str, str] = field(default_factory=dict)  # what the upstream receives

    def add(self, stage: Stage) -> None:
        self.stages.append(stage)

    def stop(self, status: int, code: str, message: str) -> None:
        self.answer = f"{status} {code}: {message}"


def explain(config: Config, probe: Probe, live: Live | None = None) -> Explanation:
    """Walk ``probe`` through the pipeline of ``config``; ``live``: the running gateway."""
    walk = _Walk(config, probe, live)
    for step in _STEPS:
        try:
            step(walk)
        except GatewayError as ex:
            walk.stop(ex.status, ex.code, ex.message)
        if walk.answer is not None:
            break
    return Explanation(walk.stages, walk.answer)


# -- the steps, in pipeline order ----------------------------------------------------------


def _ingress(walk: _Walk) -> None:
    config, probe = walk.config, walk.probe
    environ = _environ(probe)
    owned = _owned(config)
    exchange = exchange_from(environ, TrustedProxies(config.server.trusted_proxies))
    client = exchange.client
    assert client is not None
    request = request_from(exchange, environ, owned)
    walk.request = request
    dropped = [name for name, _ in probe.headers if name.lower() in owned]
    details = [f"query passed as is: {request.query}"] if request.query else []
    if dropped:
        details.append(f"dropped client headers (only gw sets them): {', '.join(dropped)}")
    walk.add(
        Stage(
            "request",
            f"{request.method} {request.path}  host {request.host or '(none)'}  "
            f"client {client.ip} ({client.proto})",
            details,
            {
                "method": request.method,
                "canonical_path": request.path,
                "query": request.query,
                "host": request.host,
                "client_ip": client.ip,
                "scheme": client.proto,
                "dropped_headers": dropped,
            },
        )
    )
    server = config.server
    if request.path in (server.health_path, server.ready_path) or (
        config.metrics.enabled and request.path == config.metrics.path
    ):
        walk.answer = "answered by the gateway itself (health, ready or metrics path)"
        return
    if server.hosts is not None:
        HostAllowList(server.hosts).check(request.authority)


def _route(walk: _Walk) -> None:
    request = _request(walk)
    table = walk.config.table
    view = RequestView(request.headers, request.query, _owned(walk.config))
    try:
        match = choose_route(table, request, _owned(walk.config))
    except RouteNotFound as ex:
        _near_misses(walk, request, table, view)
        walk.stop(ex.status, ex.code, ex.message)
        return
    route = match.route
    spec: RouteSpec = route.payload
    request.exchange.route = route.name
    request.params = match.params
    host = request.authority.name if request.authority else None
    considered = table.considered(request.method, request.path, host, view)
    at = next(i for i, (hit, _) in enumerate(considered) if hit.route is route)
    details = [f"why: {RouteTable.explain_rank(route)}"]
    details += [f"condition {text}" for text in _verdicts(route.conditions, view)]
    if match.params:
        details.append(f"params: {dict(match.params)}")
    excluded = [hit.route for hit, holds in considered if not holds]
    for i, (hit, holds) in enumerate(considered):
        if i == at:
            continue
        other = hit.route
        place = "ranks higher" if i < at else "ranks lower"
        verdict = "also matches" if holds else "excluded by conditions"
        details.append(f"{verdict}, {place}: {other.pattern} [{other.payload.source}]")
        details += [f"  condition {text}" for text in _verdicts(other.conditions, view)]
    walk.add(
        Stage(
            "route",
            f"{route.name} [{spec.source}] pattern {route.pattern}",
            details,
            {
                "route": route.name,
                "source": spec.source,
                "pattern": route.pattern,
                "params": dict(match.params),
                "conditions": _verdicts(route.conditions, view),
                "ranks_lower": [hit.route.name for hit, holds in considered[at + 1 :] if holds],
                "excluded_by_conditions": [other.name for other in excluded],
            },
        )
    )
    walk.spec = spec


def _verdicts(conditions: Sequence[Condition], view: RequestView) -> list[str]:
    """Each condition and whether the request satisfied it."""
    return [f"{c.describe()}: {'matched' if c.holds(view) else 'failed'}" for c in conditions]


def _near_misses(
    walk: _Walk, request: Request, table: RouteTable[RouteSpec], view: RequestView
) -> None:
    host = request.authority.name if request.authority else None
    misses = nearest(table.ordered(), request.method, request.path, host, view=view)
    walk.add(
        Stage(
            "route",
            "no route matches",
            [
                f"nearest: {m.route.name} ({m.route.pattern}): {'; '.join(m.differences)}"
                for m in misses
            ],
            {
                "route": None,
                "nearest": [
                    {
                        "route": m.route.name,
                        "pattern": m.route.pattern,
                        "differences": list(m.differences),
                    }
                    for m in misses
                ],
            },
        )
    )


def _guards(walk: _Walk) -> None:
    request, spec = _request(walk), _spec(walk)
    details = []
    if spec.max_body_bytes is not None:
        details.append(f"request bodies up to {spec.max_body_bytes} bytes (413 beyond)")
    if spec.connect_timeout is not None:
        details.append(f"connect timeout {spec.connect_timeout:g} s")
    if spec.addresses is None:
        walk.add(Stage("guards", "no address lists on this route", details))
        return
    ip = request.client.ip
    allowed = spec.addresses.permits(ip)
    verdict = "allowed" if allowed else "refused: 403 ip_forbidden"
    walk.add(Stage("guards", f"client {ip}: {verdict} (allow_from / deny_from)", details))
    spec.addresses.check(ip)


def _cors(walk: _Walk) -> None:
    request, spec = _request(walk), _spec(walk)
    if spec.cors is None:
        walk.add(Stage("cors", "no CORS policy on this route: headers pass as they are"))
        return
    origin = request.headers.get("Origin")
    preflight = is_preflight(request.method, request.headers)
    try:
        answer = apply(spec.cors, request)
    except CorsRefused as ex:
        walk.add(Stage("cors", f"refused: {ex.message}", data={"origin": origin}))
        raise
    if answer is not None:
        walk.add(Stage("cors", "preflight answered by gw (204)", data={"origin": origin}))
        walk.answer = "204 (CORS preflight, answered by gw)"
        return
    summary = (
        f"origin {origin} allowed; CORS headers added to the answer"
        if origin and spec.cors.allows(origin)
        else "no Origin, or one the policy does not list: no CORS headers added"
    )
    walk.add(Stage("cors", summary, data={"origin": origin, "preflight": preflight}))


def _auth(walk: _Walk) -> None:
    config, request, spec, probe = walk.config, _request(walk), _spec(walk), walk.probe
    authenticator = config.authenticator
    if authenticator is None:
        walk.add(Stage("auth", "no auth block: every caller is anonymous", data={"mode": "none"}))
        return _assume(walk, request)
    policy = spec.auth
    mode = policy.effective_mode
    accepted = list(policy.issuers or (s for s in authenticator.settings.sources()))
    data: dict[str, Any] = {"mode": mode, "issuers": accepted, "roles": policy.roles}
    details = [f"accepted issuers: {', '.join(accepted) or 'none'}"]
    if policy.roles:
        details.append(f"roles: {policy.roles}")
    if policy.scopes:
        details.append(f"scopes (all of): {', '.join(policy.scopes)}")
        data["scopes"] = list(policy.scopes)
    if not authenticator.applies(request.path, policy):
        why = "mode: none" if mode == "none" else "the path is in auth.exclude_paths"
        walk.add(Stage("auth", f"not checked ({why})", details, data))
        return
    if config.auth_throttle is not None and mode != "shadow":  # shadow never throttles
        details.append(_throttle_state(walk, request.client.ip))
    if probe.claims is not None:
        walk.add(
            Stage("auth", f"{mode}; identity assumed (--identity), not verified", details, data)
        )
        return _assume(walk, request)
    try:
        identity = _quietly(
            lambda: authenticator.authenticate(request.path, request.headers.items(), policy)
        )
    except (Forbidden, AuthUnavailable, GatewayError) as ex:
        if mode == "shadow":  # never refuses, never grants: forwarded as anonymous
            data["would"] = ex.code
            summary = f"shadow; would refuse ({ex.status} {ex.code}), forwarded as anonymous"
            walk.add(Stage("auth", summary, details, data))
            return
        walk.add(Stage("auth", f"{mode}; the credential is refused", details, data))
        raise ex from None
    if mode == "shadow":
        data["would"] = "allow"
        walk.add(Stage("auth", "shadow; would allow, forwarded as anonymous", details, data))
        return
    request.identity = identity
    if identity is None:
        walk.add(Stage("auth", f"{mode}; no credential sent: anonymous", details, data))
        return
    details.append(_identity_line(identity))
    data["identity"] = _identity_data(identity)
    walk.add(Stage("auth", f"{mode}; credential verified ({identity.method})", details, data))


def _assume(walk: _Walk, request: Request) -> None:
    """Give ``request`` the identity the operator named (--identity / --user / --api-key-id)."""
    probe, config = walk.probe, walk.config
    if probe.claims is None:
        return
    claims = dict(probe.claims)
    settings = config.authenticator.settings if config.authenticator else None
    issuer = claims.pop("iss", None)
    if issuer is None and settings is not None and len(settings.all_issuers()) == 1:
        issuer = settings.all_issuers()[0].issuer
    api_key = probe.api_key_id is not None
    try:
        identity = build_identity(
            claims,
            method="api_key" if api_key else "jwt",
            key_id=probe.api_key_id,
            claim_headers=settings.claim_headers if settings else {},
            issuer=None if api_key else issuer,
            issuer_header=settings.issuer_header if settings else None,
        )
    except UnsafeClaim as ex:
        raise _Refused(400, "invalid_identity", f"--identity: {ex}") from None
    request.identity = identity
    last = walk.stages[-1]
    last.details.append(_identity_line(identity))
    last.data["identity"] = _identity_data(identity)


def _upstream_request(walk: _Walk) -> None:
    config, request, spec = walk.config, _request(walk), _spec(walk)
    preserve = spec.upstream is not None and config.upstreams[spec.upstream].preserve_host
    shaper = Shaper(config.transformer, config.compressor)
    headers = shaper.request_headers(request, upstream_headers(request, _owned(config), preserve))
    walk.headers = headers
    shown = {k: v for k, v in headers.items() if k.lower() not in _VOLATILE}
    walk.add(
        Stage(
            "upstream headers",
            f"{len(headers)} headers (request id and trace context are minted per request)",
            [f"{name}: {value}" for name, value in shown.items()],
            {"headers": shown},
        )
    )


def _limits(walk: _Walk) -> None:
    admission, request, spec = walk.config.admission, _request(walk), _spec(walk)
    if admission is None:
        walk.add(Stage("rate limits", "none configured"))
        return
    limits = admission.limits_for(request.method, request.path)
    if not limits:
        walk.add(Stage("rate limits", "none apply to this path"))
        return
    who = Requester.of(request, spec.name, walk.headers)
    details: list[str] = []
    rows: list[dict[str, Any]] = []
    refusal: ClientError | None = None
    for limit in limits:
        line, key, refused = explain_bucket(limit, who)
        state, live = _bucket_state(walk, key, limit.rate) if key else ("", None)
        details.append(line + state)
        rows.append({"limit": limit.name, "bucket": key, "live": live})
        if refused is not None:
            rows[-1]["refused"] = refused.code
            refusal = refusal or refused
    walk.add(
        Stage(
            "rate limits",
            "decided together: all take a token or none does",
            details,
            {"limits": rows},
        )
    )
    if refusal is not None:
        raise refusal


def _cache(walk: _Walk) -> None:
    request, spec = _request(walk), _spec(walk)
    if spec.cache is None or walk.config.cache_store is None:
        walk.add(Stage("cache", "not cached on this route"))
        return
    key, bypass = cache_key_for(request, spec.name, spec.cache)
    if key is None:
        walk.add(Stage("cache", f"bypassed ({bypass})", data={"bypass": bypass}))
        return
    rules = spec.cache
    statuses = ", ".join(str(s) for s in rules.statuses)
    walk.add(
        Stage(
            "cache",
            f"key {key.digest[:16]}… ({key.description})",
            [
                f"stored when the upstream answers {statuses} within {rules.max_body_bytes} "
                f"bytes and its Cache-Control allows it, for at most {rules.ttl:g} s",
                f"vary on: {', '.join(rules.vary_headers) or 'nothing'}",
            ],
            {"key": key.digest, "description": key.description, "ttl": rules.ttl},
        )
    )


def _shaping(walk: _Walk) -> None:
    config, request = walk.config, _request(walk)
    rules = config.transformer.for_path(request.path) if config.transformer else None
    details = []
    for entry in rules.entries if rules is not None else ():
        details.append(f"transformations [{entry.where}]: " + _entry_text(entry))
    compressor = config.compressor
    gzip = (
        compressor is not None
        and compressor.enabled
        and accepts_gzip(request.headers.get("Accept-Encoding"))
    )
    if compressor is not None and compressor.enabled:
        details.append(
            "gzip: "
            + (
                f"yes, when the answer's type is compressible and {compressor.min_bytes}+ bytes"
                if gzip
                else "no (the request's Accept-Encoding does not take gzip)"
            )
        )
    summary = "transformations apply" if rules is not None else "no transformations"
    walk.add(Stage("shaping", summary, details, {"transformed": rules is not None, "gzip": gzip}))


def _upstream(walk: _Walk) -> None:
    config, request, spec = walk.config, _request(walk), _spec(walk)
    if spec.aggregate is not None or spec.upstream is None:
        parts = spec.aggregate.parts if spec.aggregate else ()
        walk.add(
            Stage(
                "upstream",
                f"aggregate: {len(parts)} parts called in parallel, merged in this order",
                [
                    f"{p.key}: {p.upstream} ({'required' if p.required else 'optional'})"
                    for p in parts
                ],
                {"aggregate": [p.key for p in parts]},
            )
        )
        return
    upstream = config.upstreams[spec.upstream]
    path = encode_path(spec.rewrite.apply(request.path)) + (
        f"?{request.query}" if request.query else ""
    )
    health = upstream.health
    policy = health.balance if health else "round_robin"
    weights = [weight for _, weight in health.weighted_targets()] if health else []
    states = walk.live.targets(spec.upstream) if walk.live else {}
    details, urls = [], []
    for i, target in enumerate(upstream.targets):
        url = f"{target.scheme}://{target.netloc}{path}"
        urls.append(url)
        weight = weights[i] if i < len(weights) else 1
        state = f", live: {states[str(target)]}" if str(target) in states else ""
        details.append(f"{url} (weight {weight}{state})")
    if health is not None and health.hash_key:
        details.append(f"sticky by {health.hash_key}")
    if spec.upgrade:
        tunnels = config.tunnels
        details.append(
            f"upgrade: {', '.join(sorted(spec.upgrade))} handshakes become tunnels (idle "
            f"{tunnels.idle_timeout:g} s, at most {tunnels.max_lifetime:g} s, "
            f"{tunnels.max_per_worker} per worker)"
        )
    keyed = spec.idempotency
    if keyed is not None:
        details.append(
            f"idempotency: {', '.join(keyed.methods)} with an Idempotency-Key"
            f"{' (required)' if keyed.required else ''} answered once per key and caller, "
            f"replayed for {keyed.ttl:g} s"
        )
    mirror = spec.mirror
    if mirror is not None:
        details.append(
            f"mirror: {mirror.percent:g}% copied to {mirror.upstream} as {mirror.path(path)} "
            f"(bodies up to {mirror.max_body_bytes} bytes)"
        )
    retry = spec.retry or upstream.retry
    read = spec.read_timeout or upstream.read_timeout
    details.append(
        f"timeouts: connect {upstream.connect_timeout:g} s, read {read:g} s; at most "
        f"{retry.attempts} tries (retried on {', '.join(sorted(retry.retry_on)) or 'nothing'})"
    )
    walk.add(
        Stage(
            "upstream",
            f"{spec.upstream} ({policy}) -> " + (urls[0] if len(urls) == 1 else "one of:"),
            details,
            {"upstream": spec.upstream, "balance": policy, "urls": urls, "live": states},
        )
    )


_STEPS: tuple[Callable[[_Walk], None], ...] = (
    _ingress,
    _route,
    _guards,
    _cors,
    _auth,
    _upstream_request,
    _limits,
    _cache,
    _shaping,
    _upstream,
)

# -- helpers ---------------------------------------------------------------------------------

_VOLATILE = frozenset({"x-request-id", "traceparent", "tracestate"})


class _Refused(ClientError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


def _environ(probe: Probe) -> dict[str, Any]:
    """The WSGI environ gunicorn would build for the probe (one header per line as sent)."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": probe.method.upper(),
        "RAW_URI": probe.target,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": probe.client_ip,
        "SERVER_PORT": "8080",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
    }
    headers = list(probe.headers)
    if probe.host is not None:
        headers.append(("Host", probe.host))
    elif not any(name.lower() == "host" for name, _ in headers):
        headers.append(("Host", "localhost"))
    if probe.cookies:
        headers.append(("Cookie", "; ".join(probe.cookies)))
    if probe.token is not None:
        headers.append(("Authorization", f"Bearer {probe.token}"))
    for name, value in headers:
        key = "HTTP_" + name.upper().replace("-", "_")
        if key in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
            key = key[5:]
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ


def _owned(config: Config) -> frozenset[str]:
    authenticator = config.authenticator
    return GATEWAY_OWNED | (authenticator.header_names() if authenticator else frozenset())


def _request(walk: _Walk) -> Request:
    assert walk.request is not None  # ingress ran
    return walk.request


def _spec(walk: _Walk) -> RouteSpec:
    assert walk.spec is not None  # a route matched
    return walk.spec


def _quietly(call: Callable[[], Identity | None]) -> Identity | None:
    """Verify without writing the audit line a live refusal writes (this is not a request)."""
    audit = logging.getLogger("gw.audit")
    before, audit.disabled = audit.disabled, True
    try:
        return call()
    finally:
        audit.disabled = before


def _throttle_state(walk: _Walk, client_ip: str) -> str:
    throttle = walk.config.auth_throttle
    assert throttle is not None
    key = throttle_key(client_ip)
    state, _ = _bucket_state(walk, key, throttle.rate)
    rate = throttle.rate
    return f"failure throttle: {rate.limit} failures per {rate.period:g} s, bucket {key}{state}"


def _bucket_state(walk: _Walk, key: str, rate: Rate) -> tuple[str, dict[str, Any] | None]:
    if walk.live is None:
        return "", None
    decision = walk.live.peek(key, rate)
    if decision is None:
        return "; live: full bucket", {"remaining": "full"}
    verdict = "" if decision.allowed else f", empty for {decision.retry_after:.1f} s"
    live = {"remaining": decision.remaining, "allowed": decision.allowed}
    return f"; live: {decision.remaining} left{verdict}", live


def _identity_line(identity: Identity) -> str:
    pairs = ", ".join(f"{name}: {value}" for name, value in identity.headers()) or "none"
    return f"caller {identity.principal}; identity headers sent upstream: {pairs}"


def _identity_data(identity: Identity) -> dict[str, Any]:
    return {
        "principal": identity.principal,
        "subject": identity.subject,
        "issuer": identity.issuer,
        "method": identity.method,
        "headers": dict(identity.headers()),
    }


def _entry_text(entry: Any) -> str:
    parts = []
    if entry.removes:
        parts.append("remove fields " + ", ".join(".".join(map(str, f)) for f in entry.removes))
    if entry.renames:
        parts.append(
            "rename " + ", ".join(f"{'.'.join(map(str, f))}->{new}" for f, new in entry.renames)
        )
    if entry.request_add or entry.request_remove:
        parts.append("request headers changed")
    if entry.response_add or entry.response_remove:
        parts.append("response headers changed")
    return "; ".join(parts) or "no changes"
