"""Route conditions on headers, query parameters and cookies; wildcard hosts; their precedence."""

from __future__ import annotations

from typing import Any

import pytest

from gw.config.load import parse_config
from gw.core.conditions import Condition, RequestView, compatible
from gw.core.headers import GATEWAY_OWNED, Headers
from gw.core.nearest import nearest
from gw.core.routes import Route
from gw.core.routing import RouteTable
from gw.errors import ConfigError, RouteNotFound

CANARY = Condition("header", "x-canary", "equals", ("1",))


def view(headers: dict[str, str] | None = None, query: str = "") -> RequestView:
    return RequestView(Headers(list((headers or {}).items())), query, GATEWAY_OWNED)


def route(name: str, *conditions: Condition, host: str | None = None) -> Route[str]:
    return Route(name, "/api/**", name, host=host, conditions=conditions)


def winner(table: RouteTable[str], request: RequestView, host: str | None = None) -> str:
    return table.match("GET", "/api/x", host, request).route.name


# -- one condition --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "request_view", "holds"),
    [
        (CANARY, view({"X-Canary": "1"}), True),
        (CANARY, view({"x-canary": "1"}), True),  # header names ignore case
        (CANARY, view({"X-Canary": "10"}), False),
        (CANARY, view({"X-Canary": "1,1"}), False),  # sent twice: joined, as forwarded
        (CANARY, view(), False),
        (
            Condition("header", "user-agent", "prefix", ("curl/",)),
            view({"User-Agent": "curl/8"}),
            True,
        ),
        (
            Condition("header", "user-agent", "prefix", ("curl/",)),
            view({"User-Agent": "Curl/8"}),
            False,
        ),
        (Condition("query", "v", "equals", ("1", "2")), view(query="v=2"), True),
        (Condition("query", "v", "equals", ("1", "2")), view(query="v=3"), False),
        (Condition("query", "v", "equals", ("1", "2")), view(query="v=1&v=2"), False),
        (Condition("query", "v", "equals", ("1", "2")), view(query="v=1&%76=1"), False),
        (Condition("query", "v", "equals", ("a b",)), view(query="v=a+b"), True),
        (Condition("query", "v", "present"), view(query="v=1&v=2"), True),
        (Condition("query", "v", "absent"), view(query="w=1"), True),
        (Condition("query", "v", "absent"), view(query="v"), False),
        (Condition("cookie", "beta", "equals", ("on",)), view({"Cookie": "a=1; beta=on"}), True),
        (
            Condition("cookie", "beta", "equals", ("on",)),
            view({"Cookie": "beta=on; beta=off"}),
            False,
        ),
        (Condition("cookie", "beta", "equals", ("on",)), view({"Cookie": "beta=on,x=1"}), False),
        (Condition("cookie", "beta", "prefix", ("o",)), view({"Cookie": "beta=on"}), True),
        (Condition("cookie", "Beta", "present"), view({"Cookie": "beta=on"}), False),
    ],
)
def test_a_condition_reads_one_unambiguous_value(
    condition: Condition, request_view: RequestView, holds: bool
) -> None:
    assert condition.holds(request_view) is holds


def test_a_condition_never_sees_a_header_gw_drops() -> None:
    """A client's copy of a gateway-owned header, or one its Connection names, is invisible."""
    user = Condition("header", "x-user-id", "present")
    assert not user.holds(view({"X-User-Id": "admin"}))
    assert CANARY.holds(view({"X-Canary": "1"}))
    assert not CANARY.holds(view({"X-Canary": "1", "Connection": "X-Canary"}))


@pytest.mark.parametrize(
    ("first", "second", "together"),
    [
        (("equals", ("1",)), ("equals", ("2",)), False),
        (("equals", ("1", "2")), ("equals", ("2",)), True),
        (("equals", ("ab",)), ("prefix", ("a",)), True),
        (("equals", ("b",)), ("prefix", ("a",)), False),
        (("prefix", ("ab",)), ("prefix", ("a",)), True),
        (("prefix", ("b",)), ("prefix", ("a",)), False),
        (("present", ()), ("equals", ("1",)), True),
        (("absent", ()), ("equals", ("1",)), False),
        (("absent", ()), ("absent", ()), True),
    ],
)
def test_compatible_says_whether_one_request_can_satisfy_both(
    first: tuple[str, tuple[str, ...]], second: tuple[str, tuple[str, ...]], together: bool
) -> None:
    a = Condition("header", "x", *first)
    b = Condition("header", "x", *second)
    assert compatible([a], [b]) is together
    assert compatible([a], [Condition("header", "y", *second)])  # other names never clash


# -- precedence ------------------------------------------------------------------------------


def test_more_conditions_win_whatever_the_order() -> None:
    both = (CANARY, Condition("query", "v", "equals", ("2",)))
    routes = [route("plain"), route("canary", CANARY), route("canary-v2", *both)]
    for ordered in (routes, routes[::-1]):
        table = RouteTable(ordered)
        assert winner(table, view({"X-Canary": "1"}, "v=2")) == "canary-v2"
        assert winner(table, view({"X-Canary": "1"}, "v=3")) == "canary"
        assert winner(table, view()) == "plain"


def test_routes_that_one_request_could_match_with_equal_rank_are_refused() -> None:
    beta = Condition("cookie", "beta", "present")
    with pytest.raises(ConfigError) as caught:
        RouteTable([route("plain"), route("canary", CANARY), route("beta", beta)])
    assert str(caught.value).count("routes[1] and routes[2] can both match one request") == 1
    assert "header x-canary = '1'" in str(caught.value)
    other = Condition("header", "x-canary", "equals", ("2",))
    RouteTable([route("canary", CANARY), route("canary-2", other)])  # exclusive: fine


def test_a_failed_condition_falls_through_to_404_when_nothing_else_matches() -> None:
    table = RouteTable([route("canary", CANARY)])
    with pytest.raises(RouteNotFound):
        table.match("GET", "/api/x", None, view())


def test_a_table_without_conditions_builds_no_view() -> None:
    assert not RouteTable([route("plain")]).conditional
    assert RouteTable([route("canary", CANARY)]).conditional


def test_exact_hosts_beat_wildcards_which_beat_no_host_longest_suffix_first() -> None:
    routes = [
        route("any"),
        route("wild", host="*.example.com"),
        route("wild-eu", host="*.eu.example.com"),
        route("exact", host="api.eu.example.com"),
    ]
    for ordered in (routes, routes[::-1]):
        table = RouteTable(ordered)
        assert winner(table, view(), "api.eu.example.com:443") == "exact"
        assert winner(table, view(), "shop.eu.example.com") == "wild-eu"
        assert winner(table, view(), "a.b.example.com.") == "wild"
        assert winner(table, view(), "example.com") == "any"  # *.x is not x itself
        assert [r.name for r in table.ordered()] == ["exact", "wild-eu", "wild", "any"]


# -- config ----------------------------------------------------------------------------------


def load(routes: list[dict[str, Any]], **extra: Any) -> Any:
    config = {"upstreams": {"svc": {"targets": ["http://127.0.0.1:9"]}}, "routes": routes}
    return parse_config({**config, **extra}, environ={})


def test_match_settings_compile_into_conditions() -> None:
    config = load(
        [
            {"path": "/a", "upstream": "svc"},
            {
                "path": "/a",
                "upstream": "svc",
                "match": {
                    "headers": {"X-Canary": 1},
                    "query": {"version": ["v1", "v2"]},
                    "cookies": {"beta": {"present": True}, "id": {"prefix": "ab"}},
                },
            },
        ]
    )
    first = config.table.ordered()[0]
    assert [c.describe() for c in first.conditions] == [
        "cookie beta present",
        "cookie id starts with 'ab'",
        "header x-canary = '1'",
        "query version in ('v1', 'v2')",
    ]
    assert first.name.startswith("ANY /a if cookie beta present and ")


@pytest.mark.parametrize(
    ("match", "problem"),
    [
        ({"headers": {"X-User-Id": "1"}}, "routes[0].match.headers.X-User-Id: gw drops"),
        ({"headers": {"Connection": "x"}}, "routes[0].match.headers.Connection: gw drops"),
        ({"headers": {"X_Canary": "1"}}, "routes[0].match.headers.X_Canary: not a header name"),
        (
            {"headers": {"X-Canary": "1", "x-canary": "2"}},
            "routes[0].match.headers.x-canary: the same header as X-Canary",
        ),
        ({"query": {"v": {"present": True, "prefix": "a"}}}, "exactly one of"),
        ({"query": {"v": []}}, "routes[0].match.query.v.values: List should have at least 1"),
        ({"headers": {"X-A": {"regex": ".*"}}}, "regex"),
    ],
)
def test_a_bad_condition_refuses_the_config_with_its_location(
    match: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load([{"path": "/a", "upstream": "svc", "match": match}])
    assert problem in str(caught.value)


def test_a_condition_on_an_identity_header_is_refused() -> None:
    auth = {
        "type": "api_key",
        "api_keys": {"keys": [{"id": "k", "sha256": "0" * 64, "consumer": "c"}]},
        "claim_headers": {"sub": "X-Consumer"},
    }
    with pytest.raises(ConfigError) as caught:
        load(
            [{"path": "/a", "upstream": "svc", "match": {"headers": {"X-Consumer": "c"}}}],
            auth=auth,
        )
    assert "routes[0].match.headers: 'x-consumer' is an identity header" in str(caught.value)


def test_nearest_says_which_conditions_failed_and_reads_wildcard_hosts() -> None:
    routes = [route("canary", CANARY, host="*.example.com")]
    misses = nearest(routes, "GET", "/api/x", "shop.example.com", view=view({"X-Canary": "2"}))
    assert [m.differences for m in misses] == [("conditions: header x-canary = '1' failed",)]
    assert nearest(routes, "GET", "/api/x", "shop.example.com", view=view({"X-Canary": "1"})) == []
    misses = nearest(routes, "GET", "/api/x", "example.com", view=view({"X-Canary": "1"}))
    assert misses[0].differences == (
        "host: the route wants *.example.com, the request has example.com",
    )
