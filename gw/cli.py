"""The ``gw`` command: check a config, list routes, explain a request, print the schema.

Exit status: 0 on success, 1 when the config is invalid or the request matches nothing (or,
for the operator commands ``limits``, ``cache`` and ``upstreams``, when no running gateway
serves the config, see ``gw.host.rundir``), 2 on usage errors. ``gw check`` is what the systemd
unit's ExecReload runs before HUP; it prints warnings on stderr and still exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import cast
from urllib.parse import urlsplit

from gw.auth.exclusions import exclusion_notes
from gw.cache import open_cache
from gw.cache.settings import CacheStoreSettings
from gw.cache.store import CACHE_DIR
from gw.config.assemble import Config
from gw.config.load import load_config
from gw.config.schema import config_schema
from gw.errors import ConfigError
from gw.explain import Live, Probe, explain
from gw.health import HealthUnavailable
from gw.health import layout as health_layout
from gw.health import snapshot as health_snapshot
from gw.host import rundir
from gw.limits import Decision, LimiterAdmin, LimiterUnavailable, Rate
from gw.limits import shared as limits_shared
from gw.limits.table import SharedTable
from gw.observe import audit
from gw.observe.instruments import ratelimit_totals
from gw.observe.metrics import SUBDIR as metrics_subdir
from gw.observe.metrics import multiprocess_directory


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "schema":
        print(json.dumps(config_schema(), indent=2))
        return 0
    operator = _OPERATOR_COMMANDS.get(args.command)
    if operator is not None:
        try:
            return operator(args)
        except (OperatorError, LimiterUnavailable, HealthUnavailable) as ex:
            print(f"gw {args.command}: {ex}", file=sys.stderr)
            return 1
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


_FINDS_GATEWAY = (
    "the config file the running gateway serves (default: $GW_CONFIG): finds its runtime "
    "directory ($GW_RUNTIME_DIR, else derived from the file's path) and its backends"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gw", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("check", "validate a config file (exit 1 and name every problem if invalid)"),
        ("routes", "list the routes in precedence order"),
        ("explain", "show every decision the gateway takes for a request, in order"),
    ):
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("-c", "--config", help="config file (default: $GW_CONFIG)")
        if name == "explain":
            cmd.add_argument("method", help="HTTP method, e.g. GET")
            cmd.add_argument("target", help="request target, e.g. /api/orders/42?x=1")
            _add_requester_options(cmd)
    sub.add_parser("schema", help="print the JSON Schema of the config file (for editors)")
    upstreams = sub.add_parser(
        "upstreams",
        help="show every target's health and every upstream's circuit breaker (live, host-wide)",
    )
    upstreams.add_argument("-c", "--config", help=_FINDS_GATEWAY)
    cache = sub.add_parser("cache", help="purge cached responses, or show the store's stats")
    cache.add_argument("action", choices=["purge", "stats"])
    cache.add_argument("--route", help="purge only this route's entries")
    cache.add_argument("--key", help="purge only this entry (its digest)")
    cache.add_argument("-c", "--config", help=_FINDS_GATEWAY)
    limits = sub.add_parser("limits", help="read or reset the live rate-limit table")
    limits.add_argument("action", choices=["stats", "peek", "reset"])
    limits.add_argument("key", nargs="?", help="bucket key, e.g. 'overrides[0]|ip:203.0.113.9'")
    limits.add_argument("-c", "--config", help=_FINDS_GATEWAY + "; names the limits for peek")
    limits.add_argument("--table", help="a table file, instead of the running gateway's")
    return parser


def _check(config: Config, _: argparse.Namespace) -> int:
    for warning in config.warnings:
        print(f"{config.source}: warning: {warning}", file=sys.stderr)
    routes = len(config.table.ordered())
    print(f"{config.source}: ok ({routes} routes, {len(config.upstreams)} upstreams)")
    for note in _exclusion_notes(config):
        print(f"{config.source}: note: {note}")
    return 0


def _exclusion_notes(config: Config) -> list[str]:
    """What ``auth.exclude_paths`` opens: routes without a policy of their own, all methods."""
    if config.authenticator is None:
        return []
    routes = [
        (route.payload.source, route.name, route.pattern, route.methods)
        for route in config.table.ordered()
        if route.payload.auth.effective_mode != "none"
    ]
    routes.sort(key=lambda entry: _source_order(entry[0]))
    return exclusion_notes(config.authenticator.settings.exclude_paths, routes)


def _source_order(source: str) -> tuple[str, int]:
    kind, _, index = source.partition("[")
    return kind, int(index.rstrip("]") or 0)


def _routes(config: Config, _: argparse.Namespace) -> int:
    for rank, route in enumerate(config.table.ordered(), 1):
        methods = ",".join(sorted(route.methods)) if route.methods else "ANY"
        host = f" host={route.host}" if route.host else ""
        host += "".join(f" [{c.describe()}]" for c in route.conditions)
        spec = route.payload
        print(
            f"{rank:3d}. {methods:<12} {route.pattern}{host} -> {spec.upstream}"
            f"  [{spec.source}, {route.name}]"
        )
    return 0


def _explain(config: Config, args: argparse.Namespace) -> int:
    """``gw explain``: every decision for one request, in pipeline order (``gw.explain``)."""
    try:
        probe = Probe(
            method=args.method.upper(),
            target=_with_query(args.target, args.query),
            host=args.host,
            headers=[_header(item) for item in args.header],
            cookies=list(args.cookie),
            client_ip=args.client_ip,
            token=args.token,
            claims=_claims(args),
            api_key_id=args.api_key_id,
        )
    except ValueError as ex:
        print(f"gw explain: {ex}", file=sys.stderr)
        return 2
    explanation = explain(config, probe, _live(args))
    if args.json:
        print(json.dumps(explanation.as_json(), indent=2))
    else:
        print(explanation.render())
    answer = explanation.answer or ""
    return 1 if answer[:1] in ("4", "5") else 0


def _add_requester_options(cmd: argparse.ArgumentParser) -> None:
    """Options that say who sends the request, and what it carries."""
    cmd.add_argument("--host", help="Host header of the request")
    cmd.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a request header, as the client sends it; repeatable",
    )
    cmd.add_argument(
        "--cookie", action="append", default=[], metavar="NAME=VALUE", help="a cookie; repeatable"
    )
    cmd.add_argument(
        "--query",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a query parameter, added to the target's query as written; repeatable",
    )
    cmd.add_argument(
        "--client",
        "--client-ip",
        dest="client_ip",
        default="127.0.0.1",
        help="the address the request comes from (default 127.0.0.1); a trusted proxy's "
        "X-Forwarded-For (-H) is resolved as the gateway does",
    )
    cmd.add_argument("--token", help="a bearer token, verified as a worker would")
    cmd.add_argument(
        "--identity",
        metavar="sub=...,role=...",
        help="assume this verified identity (claims) instead of verifying a token",
    )
    cmd.add_argument("--user", help="shorthand for --identity sub=USER")
    cmd.add_argument("--api-key-id", help="the caller is this API key (its id)")
    cmd.add_argument("--json", action="store_true", help="the same decisions as JSON")


def _with_query(target: str, parameters: list[str]) -> str:
    """The target with ``--query`` parameters appended to its query, as written."""
    if not parameters:
        return target
    return target + ("&" if "?" in target else "?") + "&".join(parameters)


def _header(item: str) -> tuple[str, str]:
    name, colon, value = item.partition(":")
    if not colon or not name.strip():
        raise ValueError(f"-H {item!r}: expected 'Name: value'")
    return name.strip(), value.strip()


def _claims(args: argparse.Namespace) -> dict[str, str] | None:
    """The identity ``--identity``/``--user``/``--api-key-id`` assume, as claims."""
    claims: dict[str, str] = {}
    for pair in (args.identity or "").split(","):
        if not pair.strip():
            continue
        name, eq, value = pair.partition("=")
        if not eq or not name.strip():
            raise ValueError(f"--identity {args.identity!r}: expected name=value,...")
        claims[name.strip()] = value.strip()
    if args.user:
        claims["sub"] = args.user
    if args.api_key_id and "sub" not in claims:
        claims["sub"] = args.api_key_id
    return claims or None


class _LiveGateway:
    """The running gateway's limiter and health table, read as ``gw limits`` and
    ``gw upstreams`` read them."""

    def __init__(self, config: Config, args: argparse.Namespace) -> None:
        self.directory = _gateway_dir(args)
        self.limiter, _ = _limits_backend(config, args)

    def peek(self, key: str, rate: Rate) -> Decision | None:
        return self.limiter.peek(key, rate)

    def targets(self, upstream: str) -> dict[str, str]:
        path = os.path.join(self.directory, health_layout.TABLE_FILE)
        try:
            rows = health_snapshot.snapshot(path)
        except (OSError, HealthUnavailable):
            return {}
        return {
            row["target"]: row["state"]
            for row in rows
            if row["kind"] == "target" and row["upstream"] == upstream
        }


def _live(args: argparse.Namespace) -> Live | None:
    """The running gateway that serves the config, when there is one."""
    config = _operator_config(args)
    if config is None:
        return None
    try:
        return _LiveGateway(config, args)
    except (OperatorError, LimiterUnavailable):
        return None


class OperatorError(Exception):
    """An operator command cannot run; the message says why and what to do."""


def limits_command(args: argparse.Namespace) -> int:
    """``gw limits stats|peek|reset``: the live table (or Redis) seen from outside the server."""
    config = _operator_config(args)
    if args.action != "stats" and not args.key:
        print("gw limits: peek and reset need a bucket key", file=sys.stderr)
        return 2
    backend, where = _limits_backend(config, args)
    if args.action == "stats":
        print(json.dumps({**backend.stats(), **_decisions(args)}, indent=2))
        return 0
    if args.action == "reset":
        held = backend.reset(args.key)
        result = "reset" if held else "no state"
        audit.record("limits.reset", where, _audit_dir(args, where), key=args.key, result=result)
        print("reset" if held else "no live state for that key")
        return 0
    admission = config.admission if config else None
    limit = admission.limit_named(args.key.split("|", 1)[0]) if admission else None
    if limit is None:
        print("gw limits: peek needs -c CONFIG naming the limit in the key", file=sys.stderr)
        return 2
    decision = backend.peek(args.key, limit.rate)
    print(json.dumps(decision._asdict() if decision else {"state": "full bucket"}))
    return 0


def _decisions(args: argparse.Namespace) -> dict[str, object]:
    """The running gateway's decisions so far, enforced and shadow apart (its metric files)."""
    if args.table:
        return {}
    try:
        directory = multiprocess_directory() or os.path.join(_gateway_dir(args), metrics_subdir)
    except OperatorError:  # a Redis backend, and no gateway of this config on this host
        return {}
    if not os.path.isdir(directory):
        return {}
    try:
        return {"decisions": ratelimit_totals(directory)}
    except OSError as ex:  # TimeoutError: the master is compacting the files
        return {"decisions_unavailable": str(ex)}


def _limits_backend(config: Config | None, args: argparse.Namespace) -> tuple[LimiterAdmin, str]:
    """Open the limiter the gateway uses; return it with where it lives (for the audit)."""
    table = getattr(args, "table", None)  # gw limits --table; gw explain has none
    if table:
        return _open_table(table), table
    backend = config.limits_backend if config else "shared"
    if config is not None and config.admission is not None and backend != "shared":
        return cast(LimiterAdmin, config.admission.open_backend()), _redacted(backend)
    path = os.path.join(_gateway_dir(args), limits_shared.TABLE_FILE)
    return _open_table(path), path


def _open_table(path: str) -> SharedTable:
    try:
        return SharedTable.open(path)
    except (OSError, LimiterUnavailable) as ex:
        raise OperatorError(f"cannot open the rate-limit table {path}: {ex}") from None


def upstreams_command(args: argparse.Namespace) -> int:
    """``gw upstreams``: the shared health table, read from outside the server."""
    path = os.path.join(_gateway_dir(args), health_layout.TABLE_FILE)
    try:
        rows = health_snapshot.snapshot(path)
    except (OSError, HealthUnavailable) as ex:
        raise OperatorError(f"cannot read the health table {path}: {ex}") from None
    print(json.dumps(rows, indent=2))
    return 0


def cache_command(args: argparse.Namespace) -> int:
    """``gw cache purge|stats``: the live store (the gateway's directory, or Redis)."""
    config = _operator_config(args)
    settings = (config.cache_store if config else None) or CacheStoreSettings()
    if settings.backend == "shared":
        where = os.path.join(_gateway_dir(args), CACHE_DIR)
        store = open_cache(settings, where)
    else:
        where, store = _redacted(settings.backend), open_cache(settings)
    if args.action == "stats":
        print(json.dumps(store.stats(), indent=2))
        return 0
    removed = store.purge(args.key, args.route)
    scope = {"route": args.route, "key": args.key}
    audit.record(
        "cache.purge", where, _audit_dir(args, where), **scope, result=f"{removed} removed"
    )
    print(f"purged {removed} entr{'y' if removed == 1 else 'ies'}")
    return 0


def _config_path(args: argparse.Namespace) -> str | None:
    return cast("str | None", getattr(args, "config", None)) or os.environ.get("GW_CONFIG")


def _operator_config(args: argparse.Namespace) -> Config | None:
    """Load the config the gateway serves, if named (-c or GW_CONFIG)."""
    path = _config_path(args)
    if not path:
        return None
    try:
        return load_config(path)
    except ConfigError as ex:
        raise OperatorError(
            f"{path}: {'; '.join(ex.problems)} (the CLI reads the file with this shell's "
            "environment: export the variables the gateway was started with)"
        ) from None


def _gateway_dir(args: argparse.Namespace) -> str:
    """The runtime directory of the running gateway that serves the config (``gw.host.rundir``)."""
    try:
        return rundir.locate(_config_path(args))
    except rundir.RuntimeDirError as ex:
        raise OperatorError(str(ex)) from None


def _audit_dir(args: argparse.Namespace, where: str) -> str | None:
    """Where the audit file goes: beside the file acted on; for a Redis backend, the running
    gateway's runtime directory (where its reloads are audited), if one serves the config."""
    if "://" not in where:
        return os.path.dirname(where)
    try:
        return _gateway_dir(args)
    except OperatorError:
        return None  # the line still goes to stderr


def _redacted(url: str) -> str:
    """A backend URL without its password, for the audit line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username or ''}:***@{host}").geturl()


_OPERATOR_COMMANDS = {
    "limits": limits_command,
    "upstreams": upstreams_command,
    "cache": cache_command,
}

if __name__ == "__main__":
    sys.exit(main())
