"""Assemble the validated settings into the frozen ``Config`` the gateway serves.

Build once, serve many: everything here runs at start-up (or in ``gw check``); the request
path only ever sees the ``Config`` this module returns. Each feature compiles its own settings
(``gw.config.upstreams``, ``gw.auth.compile``, ``gw.limits.compile``, ``gw.shaping.compile``,
``gw.cors``); this module joins them in the routes. Every problem is reported with its exact
location (``routes[3].upstream: no upstream named 'orderz' (known: orders, users)``) and any
problem refuses the whole file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gw.auth import DEFAULT_POLICY, Authenticator, RoutePolicy
from gw.auth.compile import compile_authenticator, compile_throttle
from gw.auth.exclusions import GuardedRoute
from gw.auth.throttle import FailureThrottle
from gw.cache.settings import CacheStoreSettings, RouteCacheSettings
from gw.config.matching import compile_conditions
from gw.config.settings import GatewaySettings, RouteSettings, ServerSettings
from gw.config.upstreams import UpstreamSettings, compile_upstreams, retry_policy, upstream_for_url
from gw.core.headers import canonical_name
from gw.core.patterns import SegmentKind, parse_pattern
from gw.core.retry import RetryPolicy
from gw.core.rewrite import Rewrite, validate_prefix
from gw.core.routes import Route
from gw.core.routing import EXPLICIT_ONLY_METHODS, RouteTable
from gw.cors import CorsPolicy
from gw.errors import ConfigError
from gw.guards import AddressRule, compile_rule
from gw.idempotency.settings import IdempotencyStoreSettings, RouteIdempotencySettings
from gw.limits.admission import Admission
from gw.limits.compile import compile_admission, limiter_opener
from gw.limits.settings import RateLimitingSettings
from gw.mirror.policy import MirrorPolicy, compile_mirror
from gw.observe.metrics import MetricsSettings
from gw.shaping.compile import compile_route_aggregate, compile_transformer
from gw.shaping.compose import AggregateSpec
from gw.shaping.compress import Compressor
from gw.shaping.transform import Transformer
from gw.tunnel.settings import TunnelSettings
from gw.upstream.spec import UpstreamSpec

DEFAULT_METRICS = MetricsSettings()
DEFAULT_TUNNELS = TunnelSettings()


@dataclass(frozen=True)
class RouteSpec:
    """A validated route; the payload of the route table."""

    name: str
    source: str
    upstream: str | None  # None for an aggregate route
    rewrite: Rewrite
    read_timeout: float | None
    cors: CorsPolicy | None = None
    aggregate: AggregateSpec | None = None
    retry: RetryPolicy | None = None  # the route's own; None: the upstream's
    auth: RoutePolicy = DEFAULT_POLICY
    cache: RouteCacheSettings | None = None
    stream_timeout: float | None = None  # None: server.deadline bounds the body too
    max_body_bytes: int | None = None  # None: server.max_body_bytes
    connect_timeout: float | None = None  # None: the upstream's
    addresses: AddressRule | None = None  # allow_from / deny_from; None: any address
    mirror: MirrorPolicy | None = None  # shadow traffic
    idempotency: RouteIdempotencySettings | None = None
    upgrade: frozenset[str] = frozenset()  # protocols tunnelled (gw.tunnel); empty: none


@dataclass(frozen=True)
class Config:
    server: ServerSettings
    upstreams: Mapping[str, UpstreamSpec]
    table: RouteTable[RouteSpec]
    source: str
    admission: Admission | None = None
    security_headers: tuple[tuple[str, str], ...] = ()
    transformer: Transformer | None = None
    compressor: Compressor | None = None
    aggregator_threads: int = 16
    authenticator: Authenticator | None = None
    auth_throttle: FailureThrottle | None = None  # None: no auth block, or failure_limit: null
    metrics: MetricsSettings = DEFAULT_METRICS
    cache_store: CacheStoreSettings | None = None  # None: no route caches
    idempotency_store: IdempotencyStoreSettings | None = None  # None: no route keyed
    warnings: tuple[str, ...] = ()  # loads and serves, but probably not as meant
    limits_backend: str = "shared"  # rate_limiting.backend, for the operator CLI
    mirror_threads: int = 0  # the routes' mirror.max_in_flight summed; 0: no mirroring
    tunnels: TunnelSettings = DEFAULT_TUNNELS


def assemble(settings: GatewaySettings, source: str) -> Config:
    """Compile every feature's settings and the routes that join them.

    Raises:
        ConfigError: listing every problem with its location.
    """
    problems: list[str] = []
    upstreams = compile_upstreams(_named_upstreams(settings, problems), problems)
    routes = _compile_routes(settings, upstreams, problems)
    warnings = _route_warnings(settings)
    admission = compile_admission(settings.rate_limiting, problems)
    transformer = compile_transformer(settings.transformations, problems)
    server = settings.server
    if settings.metrics.enabled and settings.metrics.path in (
        server.health_path,
        server.ready_path,
    ):
        problems.append("metrics.path: must differ from server.health_path and server.ready_path")
    authenticator = compile_authenticator(settings.auth, _guarded_routes(settings), problems)
    keyed = any(r.idempotency for r in settings.routes)
    if keyed:
        warnings += _idempotency_warnings(settings)
    if authenticator is not None:
        _check_identity_conditions(routes, authenticator.header_names(), problems)
    if problems:
        raise ConfigError(problems)
    return Config(
        server=settings.server,
        upstreams=upstreams,
        table=RouteTable(routes, explicit_only=EXPLICIT_ONLY_METHODS),
        source=source,
        admission=admission,
        security_headers=tuple(settings.security_headers.items()),
        transformer=transformer,
        compressor=Compressor(settings.compression) if settings.compression else None,
        aggregator_threads=settings.aggregation.threads,
        authenticator=authenticator,
        auth_throttle=_auth_throttle(settings),
        metrics=settings.metrics,
        cache_store=settings.cache_store if any(r.cache for r in settings.routes) else None,
        idempotency_store=settings.idempotency_store if keyed else None,
        warnings=tuple(warnings),
        limits_backend=settings.rate_limiting.backend if settings.rate_limiting else "shared",
        mirror_threads=sum(r.mirror.max_in_flight for r in settings.routes if r.mirror),
        tunnels=settings.tunnels,
    )


def _named_upstreams(
    settings: GatewaySettings, problems: list[str]
) -> dict[str, tuple[str, UpstreamSettings]]:
    """Every upstream by name, with where it is written: ``upstreams:``, seed 000's
    ``servers:`` and seed 003's routes that give a URL."""
    named: dict[str, tuple[str, UpstreamSettings]] = {
        name: (f"upstreams.{name}", up) for name, up in settings.upstreams.items()
    }
    for i, server in enumerate(settings.servers):
        if server.alias in named:
            problems.append(f"servers[{i}].alias: upstream {server.alias!r} is defined twice")
        named[server.alias] = (f"servers[{i}].url", upstream_for_url(server.url))
    for i, route in enumerate(settings.routes):
        if route.upstream and "://" in route.upstream and route.upstream not in named:
            named[route.upstream] = (f"routes[{i}].upstream", upstream_for_url(route.upstream))
    return named


def _guarded_routes(settings: GatewaySettings) -> list[GuardedRoute]:
    """The routes with an explicit ``auth:``, for the auth compile."""
    return [
        GuardedRoute(f"routes[{i}]", route.name or _default_name(route), route.path, route.auth)
        for i, route in enumerate(settings.routes)
        if route.auth is not None
    ]


def _auth_throttle(settings: GatewaySettings) -> FailureThrottle | None:
    """The failed-authentication throttle, in the rate limiter's backend."""
    opener = limiter_opener(settings.rate_limiting or RateLimitingSettings())
    return compile_throttle(settings.auth, opener)


def _compile_routes(
    settings: GatewaySettings, upstreams: Mapping[str, UpstreamSpec], problems: list[str]
) -> list[Route[RouteSpec]]:
    default_cors = CorsPolicy.compile(settings.cors) if settings.cors else None
    entries = [(f"routes[{i}]", r) for i, r in enumerate(settings.routes)]
    entries += [
        (
            f"paths[{i}]",
            RouteSettings(path=p.path, methods=[p.method], upstream=p.integration.server),
        )
        for i, p in enumerate(settings.paths)
    ]
    routes = []
    names: dict[str, tuple[str, bool]] = {}
    for where, route in entries:
        compiled = _route(where, route, upstreams, default_cors, problems)
        if compiled is None:
            continue
        named = route.name is not None
        other, other_named = names.get(compiled.name, ("", False))
        # Two unnamed routes share a default name only when they match the same requests:
        # the route table reports that, naming both routes.
        if other and (named or other_named):
            problems.append(f"{where}.name: {compiled.name!r} is already the name of {other}")
        names[compiled.name] = (where, named)
        routes.append(compiled)
    return routes


def _route(
    where: str,
    route: RouteSettings,
    upstreams: Mapping[str, UpstreamSpec],
    default_cors: CorsPolicy | None,
    problems: list[str],
) -> Route[RouteSpec] | None:
    count = len(problems)
    seed_000 = where.startswith("paths")
    try:
        parse_pattern(route.path)
    except ValueError as ex:
        problems.append(f"{where}.path: {ex}")
    upstream = upstreams.get(route.upstream) if route.upstream else None
    if route.upstream and upstream is None and "://" not in route.upstream:
        known = ", ".join(sorted(upstreams)) or "none defined"
        field = "integration.server" if seed_000 else "upstream"
        problems.append(f"{where}.{field}: no upstream named {route.upstream!r} (known: {known})")
    aggregate = compile_route_aggregate(route.aggregate, upstreams, route.path, where, problems)
    if route.idempotency is not None and route.aggregate is not None:
        problems.append(f"{where}.idempotency: an aggregate route cannot be keyed (it only GETs)")
    if route.upgrade and (route.aggregate or route.cache):
        problems.append(f"{where}.upgrade: a tunnel goes to one upstream, uncached")
    rewrite = _rewrite(where, route, upstream, problems)
    mirror = None
    if route.mirror is not None:
        mirror = compile_mirror(route.mirror, route.upstream, upstreams, where, problems)
    conditions = compile_conditions(where, route.match, problems)
    if len(problems) > count or rewrite is None or (upstream is None and aggregate is None):
        return None
    methods = frozenset(route.methods) if route.methods else None
    name = route.name or _default_name(route)
    cors = CorsPolicy.compile(route.cors) if route.cors else default_cors
    target = upstream.name if upstream else None
    retry = retry_policy(route.retries) if route.retries else None
    policy = route.auth or DEFAULT_POLICY
    spec = RouteSpec(
        name,
        where,
        target,
        rewrite,
        route.read_timeout,
        cors,
        aggregate,
        retry,
        policy,
        route.cache,
        route.stream_timeout,
        route.max_body_bytes,
        route.connect_timeout,
        compile_rule(route.allow_from, route.deny_from),
        mirror,
        route.idempotency,
        frozenset(route.upgrade or ()),
    )
    host = route.host.lower() if route.host else None
    return Route(
        name=name,
        pattern=route.path,
        payload=spec,
        methods=methods,
        host=host,
        conditions=conditions,
    )


def _check_identity_conditions(
    routes: list[Route[RouteSpec]], owned: frozenset[str], problems: list[str]
) -> None:
    """A condition on an identity header could never hold: gw drops the client's copy."""
    for route in routes:
        for condition in route.conditions:
            if condition.source == "header" and canonical_name(condition.name) in owned:
                problems.append(
                    f"{route.payload.source}.match.headers: {condition.name!r} is an identity "
                    "header gw sets itself (auth), so no condition can see a client's copy"
                )


def _rewrite(
    where: str, route: RouteSettings, upstream: UpstreamSpec | None, problems: list[str]
) -> Rewrite | None:
    try:
        strip = validate_prefix(route.strip_prefix) if route.strip_prefix else None
    except ValueError as ex:
        problems.append(f"{where}.strip_prefix: {ex}")
        return None
    replace = None
    if route.rewrite is not None:
        try:
            prefix = validate_prefix(route.rewrite.prefix)
            to = "" if route.rewrite.to == "/" else validate_prefix(route.rewrite.to)
        except ValueError as ex:
            problems.append(f"{where}.rewrite: {ex}")
            return None
        strip, replace = (None, (prefix, to)) if to else (prefix, None)
        if route.strip_prefix:
            problems.append(f"{where}: use either strip_prefix or rewrite, not both")
            return None
    base = upstream.targets[0].base_path if upstream else ""
    return Rewrite(strip_prefix=strip, replace_prefix=replace, target_prefix=base)


def _default_name(route: RouteSettings) -> str:
    """``GET,POST /api/orders/**``, with the host when the route has one (``GET a.example/x``)
    and its conditions (``GET /x if header x-canary = '1'``)."""
    methods = ",".join(route.methods) if route.methods else "ANY"
    name = f"{methods} {route.host.lower() if route.host else ''}{route.path}"
    conditions = compile_conditions("", route.match, [])
    return name + (" if " + " and ".join(c.describe() for c in conditions) if conditions else "")


def _route_warnings(settings: GatewaySettings) -> list[str]:
    """What loads and serves, but probably not as the author meant."""
    if not settings.routes and not settings.paths:
        return ["routes: none: every request except the health paths gets 404"]
    warnings = []
    for i, route in enumerate(settings.routes):
        prefix = route.strip_prefix or (route.rewrite.prefix if route.rewrite else None)
        if prefix is not None and not _prefix_can_apply(route.path, prefix):
            field = "strip_prefix" if route.strip_prefix else "rewrite.prefix"
            warnings.append(
                f"routes[{i}].{field}: {prefix!r} never applies: no path that {route.path!r} "
                "matches starts with it, so requests go upstream unchanged"
            )
        buffered = settings.server.request_buffer_bytes
        if route.mirror is not None and route.mirror.max_body_bytes > buffered:
            warnings.append(
                f"routes[{i}].mirror.max_body_bytes: bodies over server.request_buffer_bytes "
                f"({buffered}) stream to the upstream and are never mirrored"
            )
    return warnings + _host_only_twins(settings.routes)


def _prefix_can_apply(pattern: str, prefix: str) -> bool:
    """Whether some path the pattern matches starts with ``prefix`` (whole segments)."""
    try:
        segments = parse_pattern(pattern).segments
        wanted = validate_prefix(prefix).split("/")[1:] if prefix != "/" else []
    except ValueError:
        return True  # reported as a problem elsewhere
    for i, part in enumerate(wanted):
        if i >= len(segments):
            return False
        segment = segments[i]
        if segment.kind in (SegmentKind.PLUS, SegmentKind.STAR):
            return True
        if segment.kind is SegmentKind.LITERAL and segment.value != part:
            return False
    return True


def _host_only_twins(routes: list[RouteSettings]) -> list[str]:
    """Unnamed routes that differ only by host: their names (in logs, metrics) hold the host."""
    seen: dict[tuple[str, tuple[str, ...]], int] = {}
    warnings = []
    for i, route in enumerate(routes):
        if route.name is not None:
            continue
        shape = (route.path, tuple(route.methods or ()))
        if shape in seen and route.host != routes[seen[shape]].host:
            warnings.append(
                f"routes[{i}]: differs from routes[{seen[shape]}] only by host; each is named "
                f"after its host ({_default_name(route)!r}): give them names of your own"
            )
        seen.setdefault(shape, i)
    return warnings


def _idempotency_warnings(settings: GatewaySettings) -> list[str]:
    """Keyed routes that serve, but not as safely as meant."""
    warnings = []
    for i, route in enumerate(settings.routes):
        rules = route.idempotency
        if rules and route.methods and not set(rules.methods) & set(route.methods):
            warnings.append(
                f"routes[{i}].idempotency.methods: the route takes none of "
                f"{', '.join(rules.methods)}: no request is keyed"
            )
    store = settings.idempotency_store
    if store.backend != "shared" and store.lock_timeout < settings.server.deadline:
        warnings.append(
            f"idempotency_store.lock_timeout: {store.lock_timeout:g}s is below "
            f"server.deadline ({settings.server.deadline:g}s): in Redis a request slower than "
            "it loses its in-flight mark, and a concurrent duplicate may be forwarded too"
        )
    return warnings
