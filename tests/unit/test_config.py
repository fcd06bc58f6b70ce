"""Config loading: the seed examples load unchanged; every mistake names its location."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gw.cli import main
from gw.config.load import load_config, parse_config
from gw.errors import ConfigError, MethodNotAllowed
from tests.data.seeds import SEED_000, SEED_003_AUTH, SEED_003_ROUTES


def problems_of(data: object, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, env or {})
    return info.value.problems


def test_seed_000_loads_unchanged_and_routes_users() -> None:
    config = parse_config(yaml.safe_load(SEED_000), {})
    match = config.table.match("GET", "/api/users/42")
    assert match.route.payload.upstream == "users"
    assert str(config.upstreams["users"].targets[0]) == "https://users.example.com"


def test_seed_003_routes_load_unchanged_and_strip_prefix() -> None:
    config = parse_config(json.loads(SEED_003_ROUTES), {})
    match = config.table.match("GET", "/api/orders/ord_x7k9")
    spec = match.route.payload
    assert config.upstreams[spec.upstream].targets[0].netloc == "orders-service:3002"
    assert spec.rewrite.apply("/api/orders/ord_x7k9") == "/orders/ord_x7k9"


def test_seed_003_auth_block_loads_unchanged_and_protects_every_route() -> None:
    data = {**json.loads(SEED_003_ROUTES), **json.loads(SEED_003_AUTH)}
    config = parse_config(data, {})
    assert config.authenticator is not None
    assert config.authenticator.is_excluded("/api/auth/login")
    for route in config.table.ordered():
        assert route.payload.auth.effective_mode == "required"


def test_unknown_blocks_are_refused_not_ignored() -> None:
    data = {**json.loads(SEED_003_ROUTES), "caching": {"ttl": 30}}
    assert problems_of(data) == ["caching: unknown key"]


def test_route_auth_policy_without_auth_block_is_an_error() -> None:
    data = json.loads(SEED_003_ROUTES)
    data["routes"][0]["auth"] = {"mode": "required", "roles": ["admin"]}
    assert problems_of(data) == [
        "routes[0].auth: this route has an auth policy but the gateway has no 'auth' block"
    ]


def test_route_naming_an_unknown_issuer_is_an_error_at_its_location() -> None:
    data = {**json.loads(SEED_003_ROUTES), **json.loads(SEED_003_AUTH)}
    data["routes"][2]["auth"] = {"issuers": ["main"], "roles": {"main": ["admin"]}}
    assert problems_of(data) == [
        "routes[2].auth.issuers[0]: no issuer named 'main' (known: https://auth.example.com)",
        "routes[2].auth.roles.main: no issuer named 'main' (known: https://auth.example.com)",
    ]
    data["routes"][2]["auth"] = {"issuers": ["https://auth.example.com"]}
    assert parse_config(data, {}).table.match("GET", "/api/products/1").route.payload.auth


def admin_behind_an_exclusion() -> dict[str, object]:
    data = {**json.loads(SEED_003_ROUTES), **json.loads(SEED_003_AUTH)}
    data["routes"].append(
        {
            "name": "admin",
            "path": "/admin/**",
            "upstream": "http://admin-service:3004",
            "auth": {"roles": ["admin"]},
        }
    )
    data["auth"]["exclude_paths"] = ["/api/health", "/admin/**"]
    return data


def test_exclusion_that_would_open_a_role_route_is_refused() -> None:
    assert problems_of(admin_behind_an_exclusion()) == [
        "auth.exclude_paths[1]: '/admin/**' would make route 'admin' (routes[3]), which "
        "requires roles [admin], public"
    ]


def test_exclusion_may_open_routes_without_a_policy_of_their_own() -> None:
    data = admin_behind_an_exclusion()
    data["auth"]["exclude_paths"] = ["/api/products/**"]  # type: ignore[index]
    config = parse_config(data, {})
    assert config.authenticator is not None and config.authenticator.is_excluded("/api/products")


def test_gw_check_prints_the_refused_exclusion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(admin_behind_an_exclusion()))
    assert main(["check", "-c", str(path)]) == 1
    err = capsys.readouterr().err
    assert (
        f"{path}: auth.exclude_paths[1]: '/admin/**' would make route 'admin' (routes[3]), "
        "which requires roles [admin], public" in err
    )


def test_gw_check_says_what_each_exclusion_opens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = {**json.loads(SEED_003_ROUTES), **json.loads(SEED_003_AUTH)}
    data["auth"]["exclude_paths"] = ["/api/health", "/api/users/**"]
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["check", "-c", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:] == [
        f"{path}: note: auth.exclude_paths[1]: '/api/users/**' opens route "
        "'GET,POST,PUT,DELETE /api/users/**' (routes[0]) to anyone, for DELETE, GET, POST, PUT"
    ]


def test_unknown_upstream_names_location_and_known_names() -> None:
    data = {
        "upstreams": {
            "orders": {"targets": ["http://127.0.0.1:1"]},
            "users": {"targets": ["http://127.0.0.1:2"]},
        },
        "routes": [{"path": "/a", "upstream": "orders"}] * 0
        + [{"path": f"/r{i}", "upstream": "orders"} for i in range(3)]
        + [{"path": "/x", "upstream": "orderz"}],
    }
    assert problems_of(data) == [
        "routes[3].upstream: no upstream named 'orderz' (known: orders, users)"
    ]


def test_seed_000_unknown_server_points_at_integration_server() -> None:
    data = yaml.safe_load(SEED_000)
    data["paths"][1]["integration"]["server"] = "ordrs"
    assert problems_of(data) == [
        "paths[1].integration.server: no upstream named 'ordrs' (known: orders, users)"
    ]


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ({"path": "/a", "upstream": "u", "strip_prefix": "api"}, "routes[0].strip_prefix:"),
        (
            {"path": "/a", "upstream": "u", "methods": ["GRAB"]},
            "routes[0].methods: unknown HTTP method",
        ),
        (
            {"path": "/a", "upstream": "u", "stripprefix": "/x"},
            "routes[0].stripprefix: unknown key",
        ),
        ({"path": "a/b", "upstream": "u"}, "routes[0].path:"),
        ({"path": "/a", "upstream": "ftp://x"}, "routes[0].upstream:"),
        ({"upstream": "u"}, "routes[0].path: Field required"),
    ],
)
def test_route_mistakes_name_their_location(route: dict[str, object], expected: str) -> None:
    data = {"upstreams": {"u": {"targets": ["http://127.0.0.1:9"]}}, "routes": [route]}
    problems = problems_of(data)
    assert any(p.startswith(expected) for p in problems), problems


def test_every_problem_is_reported_at_once() -> None:
    data = {
        "upstreams": {"u": {"targets": ["http://127.0.0.1:9", "nope"]}},
        "routes": [{"path": "/a", "upstream": "x"}, {"path": "/b", "upstream": "y"}],
    }
    problems = problems_of(data)
    assert "upstreams.u.targets[1]: 'nope' must be an http:// or https:// URL" in problems
    assert any(p.startswith("routes[0].upstream") for p in problems)
    assert any(p.startswith("routes[1].upstream") for p in problems)


def test_environment_substitution_with_defaults() -> None:
    data = {
        "upstreams": {"u": {"targets": ["http://${HOST}:${PORT:-8081}"]}},
        "routes": [{"path": "/cost-$$5", "upstream": "u"}],
    }
    config = parse_config(data, {"HOST": "10.0.0.5"})
    assert str(config.upstreams["u"].targets[0]) == "http://10.0.0.5:8081"
    assert config.table.ordered()[0].pattern == "/cost-$5"


def test_missing_environment_variable_names_location() -> None:
    data = {"upstreams": {"u": {"targets": ["http://${ORDERS_HOST}"]}}, "routes": []}
    assert problems_of(data) == [
        "upstreams.u.targets[0]: environment variable ORDERS_HOST is not set (and has no default)"
    ]


def test_duplicate_yaml_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(
        "upstreams:\n  u: {targets: ['http://a']}\n  u: {targets: ['http://b']}\nroutes: []\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert "duplicate key 'u' (line 3)" in info.value.problems[0]


def test_routes_matching_the_same_requests_are_an_error() -> None:
    data = {
        "upstreams": {"u": {"targets": ["http://127.0.0.1:9"]}},
        "routes": [
            {"path": "/a/{x}", "upstream": "u", "methods": ["GET"]},
            {"path": "/a/*", "upstream": "u", "methods": ["GET", "POST"]},
        ],
    }
    problems = problems_of(data)
    assert len(problems) == 1 and "routes[0]" in problems[0] and "routes[1]" in problems[0]


def test_rewrite_and_strip_prefix_together_are_refused() -> None:
    data = {
        "upstreams": {"u": {"targets": ["http://127.0.0.1:9"]}},
        "routes": [
            {
                "path": "/a/**",
                "upstream": "u",
                "strip_prefix": "/a",
                "rewrite": {"prefix": "/a", "to": "/b"},
            }
        ],
    }
    assert problems_of(data) == ["routes[0]: use either strip_prefix or rewrite, not both"]


def test_upstream_base_path_is_prefixed() -> None:
    data = {
        "upstreams": {"u": {"targets": ["http://127.0.0.1:9/base"]}},
        "routes": [{"path": "/api/**", "upstream": "u", "strip_prefix": "/api"}],
    }
    spec = parse_config(data, {}).table.match("GET", "/api/x").route.payload
    assert spec.rewrite.apply("/api/x") == "/base/x"


_ANY_ORIGIN_WITH_CREDENTIALS = {"allowed_origins": ["*"], "allow_credentials": True}


def _with_cors(cors: dict[str, object], on_route: bool) -> dict[str, object]:
    route: dict[str, object] = {"path": "/a", "upstream": "u"}
    data: dict[str, object] = {"upstreams": {"u": {"targets": ["http://127.0.0.1:9"]}}}
    if on_route:
        route["cors"] = cors
    else:
        data["cors"] = cors
    data["routes"] = [route]
    return data


@pytest.mark.parametrize(("on_route", "where"), [(False, "cors"), (True, "routes[0].cors")])
def test_any_origin_with_credentials_is_refused_with_its_location(
    on_route: bool, where: str
) -> None:
    """APPSEC: '*' with credentials would hand every site (and Origin: null) the session."""
    problems = problems_of(_with_cors(_ANY_ORIGIN_WITH_CREDENTIALS, on_route))
    assert len(problems) == 1 and problems[0].startswith(f"{where}: "), problems
    assert "allow_credentials" in problems[0] and "list the origins" in problems[0]


def test_null_origin_with_credentials_is_refused() -> None:
    cors = {"allowed_origins": ["https://app.example.com", "null"], "allow_credentials": True}
    problems = problems_of(_with_cors(cors, on_route=True))
    assert len(problems) == 1 and problems[0].startswith("routes[0].cors: "), problems
    assert "'null'" in problems[0]


def test_gw_check_prints_the_refused_cors_block(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(_with_cors(_ANY_ORIGIN_WITH_CREDENTIALS, on_route=True)))
    done = subprocess.run(
        [sys.executable, "-m", "gw.cli", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stdout
    assert f"{path}: routes[0].cors: " in done.stderr
    assert "list the origins" in done.stderr
    assert "ok" not in done.stdout


def _methods_config(*routes: dict[str, object]) -> dict[str, object]:
    return {"upstreams": {"u": {"targets": ["http://127.0.0.1:9"]}}, "routes": list(routes)}


@pytest.mark.parametrize("method", ["TRACE", "CONNECT"])
def test_a_route_without_methods_never_serves_trace_or_connect(method: str) -> None:
    """APPSEC: TRACE echoes the request (credentials included) and CONNECT asks for a tunnel:
    a route serves them only when it names them."""
    config = parse_config(_methods_config({"path": "/x/**", "upstream": "u"}), {})
    for other in ("GET", "POST", "DELETE", "OPTIONS", "PROPFIND"):
        assert config.table.match(other, "/x/a").route.pattern == "/x/**"
    with pytest.raises(MethodNotAllowed) as info:
        config.table.match(method, "/x/a")
    assert info.value.headers["Allow"] == "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"


def test_a_route_naming_trace_serves_it_beside_a_route_for_every_other_method() -> None:
    config = parse_config(
        _methods_config(
            {"name": "any", "path": "/x/**", "upstream": "u"},
            {"name": "trace", "path": "/x/**", "upstream": "u", "methods": ["TRACE"]},
        ),
        {},
    )
    assert config.table.match("TRACE", "/x/a").route.name == "trace"
    assert config.table.match("GET", "/x/a").route.name == "any"
    with pytest.raises(MethodNotAllowed) as info:
        config.table.match("CONNECT", "/x/a")
    assert "TRACE" in info.value.headers["Allow"]


def test_rate_limit_overrides_without_methods_still_cover_trace() -> None:
    data = _methods_config({"path": "/x/**", "upstream": "u", "methods": ["TRACE"]})
    data["rate_limiting"] = {
        "default": {"requests_per_minute": 100},
        "overrides": [{"path": "/x/**", "requests_per_minute": 1}],
    }
    admission = parse_config(data, {}).admission
    assert admission is not None
    assert admission.limits_for("TRACE", "/x/a")[0].rate.limit == 1


def _limits_config(limits: list[dict[str, object]]) -> dict[str, object]:
    return {
        "upstreams": {"u": {"targets": ["http://127.0.0.1:1"]}},
        "routes": [{"path": "/x/**", "upstream": "u"}],
        "rate_limiting": {"overrides": [{"path": "/x/**", "limits": limits}]},
    }


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        (
            {"key": "user", "when_missing": "ignore"},
            "rate_limiting.overrides[0].limits[1].when_missing: Input should be 'client_ip', "
            "'skip' or 'reject'",
        ),
        (
            {"key": "client_ip+route", "when_missing": "skip"},
            "rate_limiting.overrides[0].limits[1].when_missing: 'skip' never applies: every "
            "part of key 'client_ip+route' is always present (it matters for user, api_key, "
            "header:NAME)",
        ),
        (
            {"key": "route", "when_missing": "reject"},
            "rate_limiting.overrides[0].limits[1].when_missing: 'reject' never applies: every "
            "part of key 'route' is always present (it matters for user, api_key, header:NAME)",
        ),
    ],
)
def test_when_missing_mistakes_name_their_location(limit: dict[str, object], expected: str) -> None:
    data = _limits_config([{"requests_per_minute": 5}, {"requests_per_minute": 1, **limit}])
    assert problems_of(data) == [expected]


def test_when_missing_defaults_to_the_client_address() -> None:
    admission = parse_config(
        _limits_config([{"requests_per_minute": 5, "key": "user"}]), {}
    ).admission
    assert admission is not None
    assert admission.limits_for("GET", "/x/a")[0].when_missing == "client_ip"


def _gw_check(tmp_path: Path, data: object) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(data))
    return subprocess.run(
        [sys.executable, "-m", "gw.cli", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("path", "prefix"),
    [("/api/users/**", "/v1"), ("/api/{id}", "/api/x/y"), ("/api", "/api/v1"), ("/a/b", "/a/c")],
)
def test_gw_check_warns_about_a_strip_prefix_that_never_applies(
    tmp_path: Path, path: str, prefix: str
) -> None:
    data = {
        "upstreams": {"u": {"targets": ["http://127.0.0.1:9"]}},
        "routes": [{"path": path, "upstream": "u", "strip_prefix": prefix}],
    }
    done = _gw_check(tmp_path, data)
    assert done.returncode == 0, done.stderr
    assert f"warning: routes[0].strip_prefix: {prefix!r} never applies" in done.stderr


@pytest.mark.parametrize(
    ("path", "prefix"),
    [("/api/users/**", "/api"), ("/api/{id}/x", "/api/7"), ("/{v}/**", "/v1/users"), ("/a", "/")],
)
def test_a_strip_prefix_that_can_apply_gets_no_warning(path: str, prefix: str) -> None:
    data = {
        "upstreams": {"u": {"targets": ["http://127.0.0.1:9"]}},
        "routes": [{"path": path, "upstream": "u", "strip_prefix": prefix}],
    }
    assert parse_config(data, {}).warnings == ()


def test_a_rewrite_prefix_that_never_applies_is_warned_about_too() -> None:
    data = {
        "upstreams": {"u": {"targets": ["http://127.0.0.1:9"]}},
        "routes": [{"path": "/api/**", "upstream": "u", "rewrite": {"prefix": "/v1", "to": "/v2"}}],
    }
    (warning,) = parse_config(data, {}).warnings
    assert warning.startswith("routes[0].rewrite.prefix: '/v1' never applies")


def test_unnamed_routes_that_differ_only_by_host_load_with_a_warning(tmp_path: Path) -> None:
    data = {
        "upstreams": {"u": {"targets": ["http://127.0.0.1:9"]}},
        "routes": [
            {"path": "/api/**", "upstream": "u", "host": "a.example.com"},
            {"path": "/api/**", "upstream": "u", "host": "b.example.com"},
            {"path": "/api/**", "upstream": "u"},
        ],
    }
    config = parse_config(data, {})
    names = sorted(route.name for route in config.table.ordered())
    assert names == ["ANY /api/**", "ANY a.example.com/api/**", "ANY b.example.com/api/**"]
    assert config.table.match("GET", "/api/x", "b.example.com").route.host == "b.example.com"
    done = _gw_check(tmp_path, data)
    assert done.returncode == 0, done.stderr
    assert "warning: routes[1]: differs from routes[0] only by host" in done.stderr
    assert "warning: routes[2]: differs from routes[0] only by host" in done.stderr


def test_identical_unnamed_routes_are_refused_as_overlapping_not_as_a_name_clash() -> None:
    data = {
        "upstreams": {"u": {"targets": ["http://127.0.0.1:9"]}},
        "routes": [
            {"path": "/api/**", "upstream": "u", "host": "a.example.com"},
            {"path": "/api/**", "upstream": "u", "host": "a.example.com"},
        ],
    }
    problems = problems_of(data)
    assert "routes[0] and routes[1] match exactly the same requests" in problems[-1]
    assert not any(".name:" in problem for problem in problems)


def test_a_named_route_that_reuses_a_name_is_still_refused() -> None:
    data = {
        "upstreams": {"u": {"targets": ["http://127.0.0.1:9"]}},
        "routes": [
            {"name": "api", "path": "/a/**", "upstream": "u"},
            {"name": "api", "path": "/b/**", "upstream": "u"},
        ],
    }
    assert problems_of(data) == ["routes[1].name: 'api' is already the name of routes[0]"]


def test_a_file_without_routes_is_valid_with_a_warning(tmp_path: Path) -> None:
    """The README presents each section as optional: a server-only file checks."""
    done = _gw_check(tmp_path, {"server": {"access_log": False}})
    assert done.returncode == 0, done.stderr
    assert "ok (0 routes" in done.stdout
    assert "warning: routes: none" in done.stderr
