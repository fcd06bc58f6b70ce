"""Load, check and normalize the configuration file.

Build once, serve many: everything here runs at start-up (or in ``gw check``); the request
path only ever sees the frozen ``Config`` this module returns. Every problem is reported with
its exact location (``routes[3].upstream: no upstream named 'orderz' (known: orders, users)``)
and any problem refuses the whole file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import ValidationError

from gw.auth import DEFAULT_POLICY, Authenticator, AuthSettings, RoutePolicy
from gw.auth.exclusions import GuardedRoute, exclusion_conflicts
from gw.auth.throttle import FailureThrottle
from gw.cache.settings import CacheStoreSettings, RouteCacheSettings
from gw.config.settings import (
    GatewaySettings,
    RateLimitingSettings,
    RetrySettings,
    RouteSettings,
    ServerSettings,
    UpstreamSettings,
)
from gw.core.retry import RetryPolicy
from gw.core.rewrite import Rewrite, validate_prefix
from gw.core.routing import EXPLICIT_ONLY_METHODS, Route, RouteTable, SegmentKind, parse_pattern
from gw.cors import CorsPolicy
from gw.errors import ConfigError
from gw.health.settings import UpstreamHealthSettings
from gw.limits import Limiter
from gw.limits.admission import Admission
from gw.limits.shared import open_shared_table
from gw.observe.metrics import MetricsSettings
from gw.shaping.compose import AggregateSpec, compile_aggregate
from gw.shaping.compress import Compressor
from gw.shaping.transform import Transformer
from gw.upstream.tls import TlsClient, build_client

DEFAULT_RETRY = RetryPolicy()
DEFAULT_METRICS = MetricsSettings()
_ENV_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class Target:
    """One upstream instance: where the connection pool points."""

    scheme: str
    host: str
    port: int
    base_path: str

    @property
    def netloc(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.netloc}{self.base_path}"


@dataclass(frozen=True)
class UpstreamSpec:
    name: str
    targets: tuple[Target, ...]
    connect_timeout: float
    read_timeout: float
    pool_size: int
    preserve_host: bool
    retry: RetryPolicy = DEFAULT_RETRY
    budget_ratio: float = 0.2
    budget_min_per_second: float = 3.0
    health: UpstreamHealthSettings | None = None  # balancing, ejection, breaker, checks
    tls: TlsClient | None = None  # set when a target is https://
    idle_timeout: float = 4.0  # seconds a kept-alive connection may idle
    max_connections: int | None = None  # in use at once per target per worker; None: no cap

    def pairs(self) -> list[tuple[str, str]]:
        """``(upstream, target URL)`` for each target: the keys of the shared health table."""
        return [(self.name, str(t)) for t in self.targets]


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
    warnings: tuple[str, ...] = ()  # loads and serves, but probably not as meant
    limits_backend: str = "shared"  # rate_limiting.backend, for the operator CLI


def load_config(path: str, environ: Mapping[str, str] | None = None) -> Config:
    """Read, substitute, validate and compile the file at ``path``.

    Raises:
        ConfigError: listing every problem with its location.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as ex:
        raise ConfigError([f"cannot read the file ({ex.strerror})"]) from None
    return parse_config(_parse_yaml(text, path), os.environ if environ is None else environ, path)


def parse_config(data: Any, environ: Mapping[str, str], source: str = "<config>") -> Config:
    """Validate already-parsed YAML/JSON data and compile it."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: the top level must be a mapping of settings"])
    problems: list[str] = []
    data = _substitute(data, environ, "", problems)
    if problems:
        raise ConfigError(problems)
    settings = _validate(data)
    return _compile(settings, source)


def _parse_yaml(text: str, path: str) -> Any:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as ex:
        raise ConfigError([f"not valid YAML/JSON: {ex}"]) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys instead of keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (line {mark.line + 1})", mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _substitute(value: Any, environ: Mapping[str, str], where: str, problems: list[str]) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string; ``$$`` is a literal ``$``."""
    if isinstance(value, dict):
        return {k: _substitute(v, environ, _join(where, k), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, environ, f"{where}[{i}]", problems) for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        problems.append(f"{where}: environment variable {name} is not set (and has no default)")
        return ""

    return _ENV_REF.sub(replace, value)


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _validate(data: dict[str, Any]) -> GatewaySettings:
    try:
        return GatewaySettings.model_validate(data)
    except ValidationError as ex:
        raise ConfigError([_describe(err) for err in ex.errors()]) from None


def _describe(err: Any) -> str:
    where = ""
    for part in err["loc"]:
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    if err["type"] == "extra_forbidden":
        return f"{where}: unknown key"
    message = str(err["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}"


def _compile(settings: GatewaySettings, source: str) -> Config:
    problems: list[str] = []
    upstreams = _compile_upstreams(settings, problems)
    routes = _compile_routes(settings, upstreams, problems)
    warnings = _route_warnings(settings)
    admission = _admission(settings.rate_limiting, problems)
    transformer = _transformer(settings, problems)
    server = settings.server
    if settings.metrics.enabled and settings.metrics.path in (
        server.health_path,
        server.ready_path,
    ):
        problems.append("metrics.path: must differ from server.health_path and server.ready_path")
    authenticator = _authenticator(settings, problems)
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
        warnings=tuple(warnings),
        limits_backend=settings.rate_limiting.backend if settings.rate_limiting else "shared",
    )


def _authenticator(settings: GatewaySettings, problems: list[str]) -> Authenticator | None:
    if settings.auth is None:
        problems += [
            f"routes[{i}].auth: this route has an auth policy but the gateway has no 'auth' block"
            for i, route in enumerate(settings.routes)
            if route.auth is not None and route.auth.effective_mode != "none"
        ]
        return None
    problems += _route_policy_problems(settings.auth, settings.routes)
    try:
        return Authenticator(settings.auth)
    except ConfigError as ex:
        problems += [f"auth: {p}" for p in ex.problems]
        return None


def _route_policy_problems(auth: AuthSettings, routes: list[RouteSettings]) -> list[str]:
    """Issuers a route names that do not exist; exclusions that would open a guarded route."""
    problems = []
    guarded = []
    for i, route in enumerate(routes):
        if route.auth is not None:
            problems += [f"routes[{i}].auth.{p}" for p in auth.policy_problems(route.auth)]
            name = route.name or _default_name(route)
            guarded.append(GuardedRoute(f"routes[{i}]", name, route.path, route.auth))
    return problems + exclusion_conflicts(auth.exclude_paths, guarded)


def _auth_throttle(settings: GatewaySettings) -> FailureThrottle | None:
    """Count failed authentications in the rate limiter's backend (the shared table by
    default, or ``rate_limiting.backend``'s Redis)."""
    if settings.auth is None or settings.auth.failure_limit is None:
        return None
    opener = _limiter_opener(settings.rate_limiting or RateLimitingSettings())
    assert opener is not None  # an unknown backend was reported by _admission
    return FailureThrottle.from_settings(settings.auth.failure_limit, opener)


def _transformer(settings: GatewaySettings, problems: list[str]) -> Transformer | None:
    if not settings.transformations:
        return None
    try:
        return Transformer.compile(settings.transformations)
    except ConfigError as ex:
        problems.extend(ex.problems)
        return None


def _admission(settings: RateLimitingSettings | None, problems: list[str]) -> Admission | None:
    if settings is None:
        return None
    opener = _limiter_opener(settings)
    if opener is None:
        problems.append(
            f"rate_limiting.backend: {settings.backend!r} is neither 'shared' nor a "
            "redis://, rediss://, unix://, redis+cluster:// or rediss+cluster:// URL"
        )
        return None
    try:
        return Admission(settings, opener)
    except ConfigError as ex:
        problems.extend(ex.problems)
        return None


def _limiter_opener(settings: RateLimitingSettings) -> Callable[[], Limiter] | None:
    backend = settings.backend
    if backend == "shared":
        deadline = (settings.decision_timeout_ms or 50.0) / 1000
        return lambda: open_shared_table(deadline)
    timeout = (settings.decision_timeout_ms or 5.0) / 1000
    if backend.startswith(("redis://", "rediss://", "unix://")):

        def open_redis() -> Limiter:
            from gw.limits.redis_backend import RedisLimiter

            return RedisLimiter(backend, timeout=timeout)

        return open_redis
    if backend.startswith(("redis+cluster://", "rediss+cluster://")):

        def open_redis_cluster() -> Limiter:
            from gw.limits.redis_cluster import RedisClusterLimiter

            return RedisClusterLimiter(backend, timeout=timeout)

        return open_redis_cluster
    return None


def _compile_upstreams(settings: GatewaySettings, problems: list[str]) -> dict[str, UpstreamSpec]:
    named: dict[str, tuple[str, UpstreamSettings]] = {
        name: (f"upstreams.{name}", up) for name, up in settings.upstreams.items()
    }
    for i, server in enumerate(settings.servers):
        if server.alias in named:
            problems.append(f"servers[{i}].alias: upstream {server.alias!r} is defined twice")
        named[server.alias] = (
            f"servers[{i}].url",
            _single(server.url),
        )
    for i, route in enumerate(settings.routes):
        if route.upstream and "://" in route.upstream and route.upstream not in named:
            named[route.upstream] = (
                f"routes[{i}].upstream",
                _single(route.upstream),
            )
    return {
        name: spec
        for name, (where, up) in named.items()
        if (spec := _upstream_spec(name, where, up, problems)) is not None
    }


def _single(url: str) -> UpstreamSettings:
    """An upstream given as one URL (seed 000 servers, seed 003 routes), with the defaults."""
    return UpstreamSettings.model_validate({"targets": [url]})


def _upstream_spec(
    name: str, where: str, up: UpstreamSettings, problems: list[str]
) -> UpstreamSpec | None:
    targets = []
    urls = [url for url, _ in up.weighted_targets()]
    for i, url in enumerate(urls):
        location = where if where.endswith((".url", ".upstream")) else f"{where}.targets[{i}]"
        try:
            targets.append(parse_target(url))
        except ValueError as ex:
            problems.append(f"{location}: {ex}")
    if len(targets) != len(urls):
        return None
    if len({t.base_path for t in targets}) > 1:
        problems.append(f"{where}.targets: every target must have the same base path")
        return None
    tls, tls_problems = _tls_client(where, up, targets)
    problems.extend(tls_problems)  # the spec is still returned: routes naming it are fine
    return UpstreamSpec(
        name,
        tuple(targets),
        up.connect_timeout,
        up.read_timeout,
        up.pool_size,
        up.preserve_host,
        retry_policy(up.retries),
        up.retries.budget_ratio,
        up.retries.budget_min_per_second,
        up,
        tls,
        up.idle_timeout,
        up.max_connections,
    )


def _tls_client(
    where: str, up: UpstreamSettings, targets: list[Target]
) -> tuple[TlsClient | None, list[str]]:
    """Build the one TLS context of an upstream with https targets (loading its files now)."""
    if not any(t.scheme == "https" for t in targets):
        if up.tls is not None:
            return None, [f"{where}.tls: applies to https:// targets, and this upstream has none"]
        return None, []
    return build_client(up.tls, where)


def retry_policy(settings: RetrySettings) -> RetryPolicy:
    return RetryPolicy(
        attempts=settings.attempts,
        retry_on=frozenset(settings.retry_on),
        statuses=frozenset(settings.statuses),
        per_try_timeout=settings.per_try_timeout,
        backoff=settings.backoff,
        max_retry_after=settings.max_retry_after,
    )


def parse_target(url: str) -> Target:
    """Parse an upstream base URL (``http://host:port/base``) or raise ValueError."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{url!r} must be an http:// or https:// URL")
    if not parts.hostname or parts.username or parts.password:
        raise ValueError(f"{url!r} must name a host (and no user:password)")
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r} must not have a query or fragment")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ValueError(f"{url!r} has an invalid port") from None
    base = parts.path.rstrip("/")
    if base:
        validate_prefix(base)
    return Target(parts.scheme, parts.hostname, port, base)


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
    aggregate = _aggregate(where, route, upstreams, problems)
    rewrite = _rewrite(where, route, upstream, problems)
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
    )
    host = route.host.lower() if route.host else None
    return Route(name=name, pattern=route.path, payload=spec, methods=methods, host=host)


def _aggregate(
    where: str, route: RouteSettings, upstreams: Mapping[str, UpstreamSpec], problems: list[str]
) -> AggregateSpec | None:
    if route.aggregate is None:
        return None
    try:
        return compile_aggregate(route.aggregate, upstreams, route.path, f"{where}.aggregate")
    except ConfigError as ex:
        problems.extend(ex.problems)
        return None


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
    """``GET,POST /api/orders/**``, with the host when the route has one (``GET a.example/x``)."""
    methods = ",".join(route.methods) if route.methods else "ANY"
    return f"{methods} {route.host.lower() if route.host else ''}{route.path}"


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
