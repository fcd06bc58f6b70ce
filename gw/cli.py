"""The ``gw`` command: check a config, list routes, explain a request, print the schema.

Exit status: 0 on success, 1 when the config is invalid or the request matches nothing,
2 on usage errors. ``gw check`` is what the systemd unit's ExecReload runs before HUP.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import cast

from gw import runtime
from gw.cache import open_cache
from gw.cache.settings import CacheStoreSettings
from gw.config import Config, RouteSpec, load_config
from gw.errors import ConfigError, GatewayError
from gw.health import state as health_state
from gw.limits import LimiterAdmin, LimiterUnavailable
from gw.limits.table import SharedTable
from gw.paths import canonicalize, encode_path, split_target
from gw.routing import RouteTable
from gw.schema import config_schema


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "schema":
        print(json.dumps(config_schema(), indent=2))
        return 0
    if args.command == "limits":
        return limits_command(args)
    if args.command == "upstreams":
        return upstreams_command()
    if args.command == "cache":
        return cache_command(args)
    path = args.config or os.environ.get("GW_CONFIG")
    if not path:
        print("gw: no config file: pass -c FILE or set GW_CONFIG", file=sys.stderr)
        return 2
    try:
        config = load_config(path)
    except ConfigError as ex:
        for problem in ex.problems:
            print(f"{path}: {problem}", file=sys.stderr)
        print(
            f"gw: {path} is invalid ({len(ex.problems)} problem(s)); nothing was changed",
            file=sys.stderr,
        )
        return 1
    handler = {"check": _check, "routes": _routes, "explain": _explain}[args.command]
    return handler(config, args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gw", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("check", "validate a config file (exit 1 and name every problem if invalid)"),
        ("routes", "list the routes in precedence order"),
        ("explain", "show which route a request matches, why, and where it goes"),
    ):
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("-c", "--config", help="config file (default: $GW_CONFIG)")
        if name == "explain":
            cmd.add_argument("method", help="HTTP method, e.g. GET")
            cmd.add_argument("target", help="request target, e.g. /api/orders/42?x=1")
            cmd.add_argument("--host", help="Host header of the request")
    sub.add_parser("schema", help="print the JSON Schema of the config file (for editors)")
    sub.add_parser(
        "upstreams",
        help="show every target's health and every upstream's circuit breaker (live, host-wide)",
    )
    cache = sub.add_parser("cache", help="purge cached responses, or show the store's stats")
    cache.add_argument("action", choices=["purge", "stats"])
    cache.add_argument("--route", help="purge only this route's entries")
    cache.add_argument("--key", help="purge only this entry (its digest)")
    cache.add_argument("-c", "--config", help="config file, for a Redis cache_store")
    limits = sub.add_parser("limits", help="read or reset the live rate-limit table")
    limits.add_argument("action", choices=["stats", "peek", "reset"])
    limits.add_argument("key", nargs="?", help="bucket key, e.g. 'overrides[0]|ip:203.0.113.9'")
    limits.add_argument("-c", "--config", help="config file, to find a limit's rate and backend")
    limits.add_argument("--table", help="table file (default: $GW_RUNTIME_DIR/ratelimit.table)")
    return parser


def _check(config: Config, _: argparse.Namespace) -> int:
    for warning in config.warnings:
        print(f"{config.source}: warning: {warning}", file=sys.stderr)
    routes = len(config.table.ordered())
    print(f"{config.source}: ok ({routes} routes, {len(config.upstreams)} upstreams)")
    return 0


def _routes(config: Config, _: argparse.Namespace) -> int:
    for rank, route in enumerate(config.table.ordered(), 1):
        methods = ",".join(sorted(route.methods)) if route.methods else "ANY"
        host = f" host={route.host}" if route.host else ""
        spec = route.payload
        print(
            f"{rank:3d}. {methods:<12} {route.pattern}{host} -> {spec.upstream}"
            f"  [{spec.source}, {route.name}]"
        )
    return 0


def _explain(config: Config, args: argparse.Namespace) -> int:
    method = args.method.upper()
    try:
        raw_path, query = split_target(args.target)
        path = canonicalize(raw_path)
    except GatewayError as ex:
        print(f"rejected with {ex.status} {ex.code}: {ex.message}")
        return 1
    print(f"canonical path: {path}" + (f"  (query passed as is: {query})" if query else ""))
    if path in (config.server.health_path, config.server.ready_path):
        print("answered by the gateway itself (server.health_path / server.ready_path)")
        return 0
    host = args.host.lower().split(":")[0] if args.host else None
    candidates = config.table.candidates(method, path, host)
    if not candidates:
        try:
            config.table.match(method, path, host)
        except GatewayError as ex:
            print(f"no route: {ex.status} {ex.code}: {ex.message}")
        return 1
    winner = candidates[0]
    _print_winner(config, winner.route, winner.params, path, query)
    for other in candidates[1:]:
        print(f"  also matches, ranks lower: {other.route.pattern} [{other.route.payload.source}]")
    return 0


def _print_winner(config: Config, route: object, params: object, path: str, query: str) -> None:
    from gw.routing import Route

    assert isinstance(route, Route)
    spec: RouteSpec = route.payload
    print(f"route: {route.name} [{spec.source}] pattern {route.pattern}")
    print(f"why: {RouteTable.explain_rank(route)}")
    if params:
        print(f"params: {params}")
    if spec.aggregate is not None or spec.upstream is None:
        parts = spec.aggregate.parts if spec.aggregate else ()
        print(f"aggregate: {len(parts)} parts called in parallel, merged in this order:")
        for part in parts:
            need = "required" if part.required else "optional"
            print(f"  {part.key}: {part.upstream} ({need})")
        return
    upstream = config.upstreams[spec.upstream]
    upstream_path = encode_path(spec.rewrite.apply(path)) + (f"?{query}" if query else "")
    for target in upstream.targets:
        origin = f"{target.scheme}://{target.netloc}"
        print(f"upstream: {spec.upstream} -> {origin}{upstream_path}")


def limits_command(args: argparse.Namespace) -> int:
    """``gw limits stats|peek|reset``: the live table (or Redis) seen from outside the server."""
    config = load_config(args.config) if args.config else None
    admission = config.admission if config else None
    backend: LimiterAdmin
    if admission is not None and not args.table:
        backend = cast(LimiterAdmin, admission.open_backend())
    else:
        backend = SharedTable.open(args.table or _default_table())
    if args.action == "stats":
        print(json.dumps(backend.stats(), indent=2))
        return 0
    if not args.key:
        print("gw limits: peek and reset need a bucket key", file=sys.stderr)
        return 2
    if args.action == "reset":
        print("reset" if backend.reset(args.key) else "no live state for that key")
        return 0
    limit = admission.limit_named(args.key.split("|", 1)[0]) if admission else None
    if limit is None:
        print("gw limits: peek needs -c CONFIG naming the limit in the key", file=sys.stderr)
        return 2
    decision = backend.peek(args.key, limit.rate)
    print(json.dumps(decision._asdict() if decision else {"state": "full bucket"}))
    return 0


def upstreams_command() -> int:
    """``gw upstreams``: the shared health table, read from outside the server."""
    try:
        rows = health_state.snapshot()
    except LimiterUnavailable as ex:
        print(f"gw upstreams: {ex} (set GW_RUNTIME_DIR to the server's)", file=sys.stderr)
        return 1
    print(json.dumps(rows, indent=2))
    return 0


def cache_command(args: argparse.Namespace) -> int:
    """``gw cache purge|stats``: the live store (the host's directory, or Redis)."""
    settings = load_config(args.config).cache_store if args.config else None
    store = open_cache(settings or CacheStoreSettings())
    if args.action == "stats":
        print(json.dumps(store.stats(), indent=2))
        return 0
    removed = store.purge(args.key, args.route)
    print(f"purged {removed} entr{'y' if removed == 1 else 'ies'}")
    return 0


def _default_table() -> str:
    return os.path.join(os.environ.get("GW_RUNTIME_DIR", "/run/gw"), runtime.TABLE_FILE)


if __name__ == "__main__":
    sys.exit(main())
