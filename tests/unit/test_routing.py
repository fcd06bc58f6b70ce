"""Route matching: precedence, methods, hosts, trailing slashes, config errors."""

from __future__ import annotations

import pytest

from gw.core.paths import canonicalize
from gw.core.patterns import parse_pattern
from gw.core.routes import Route
from gw.core.routing import LONGEST_PATH_KEPT, MATCHES_KEPT, RouteTable
from gw.errors import ConfigError, MethodNotAllowed, RouteNotFound


def _route(
    name: str, pattern: str, methods: str | None = None, host: str | None = None
) -> Route[str]:
    allowed = frozenset(methods.split(",")) if methods else None
    return Route(name=name, pattern=pattern, payload=name, methods=allowed, host=host)


def _winner(table: RouteTable[str], method: str, path: str, host: str | None = None) -> str:
    return table.match(method, path, host).route.name


SEED_003 = [
    _route("users", "/api/users/**", "GET,POST,PUT,DELETE"),
    _route("orders", "/api/orders/**", "GET,POST"),
    _route("products", "/api/products/**", "GET"),
]


def test_seed_003_routes_orders() -> None:
    table = RouteTable(SEED_003)
    found = table.match("GET", "/api/orders/ord_x7k9")
    assert (found.route.name, found.rest) == ("orders", "ord_x7k9")
    assert _winner(table, "PUT", "/api/users/usr_8a3f") == "users"
    with pytest.raises(MethodNotAllowed) as caught:
        table.match("POST", "/api/products/p1")
    assert caught.value.headers["Allow"] == "GET, HEAD"


def test_seed_000_plus_wildcard_needs_a_segment() -> None:
    table = RouteTable(
        [_route("users", "/api/users/{.+}", "GET"), _route("orders", "/api/orders/{.+}", "GET")]
    )
    assert table.match("GET", "/api/users/42/posts").rest == "42/posts"
    for path in ("/api/users", "/api/users/"):
        with pytest.raises(RouteNotFound):
            table.match("GET", path)


def test_star_star_matches_the_prefix_itself_with_or_without_slash() -> None:
    table = RouteTable([_route("users", "/api/users/**")])
    assert [table.match("GET", p).rest for p in ("/api/users", "/api/users/")] == ["", ""]
    assert table.match("GET", "/api/users/42/x/").rest == "42/x/"
    with pytest.raises(RouteNotFound):
        table.match("GET", "/api/usersx")


@pytest.mark.parametrize(
    ("path", "winner"),
    [
        ("/api/users/me", "exact"),  # exact beats parameter and wildcard
        ("/api/users/42", "param"),  # parameter beats wildcard
        ("/api/users/42/orders", "deep-param"),  # more literal segments win
        ("/api/users/42/x", "wild"),  # only the wildcard matches
        ("/api/users", "wild"),
        ("/api/other", "api-plus"),  # {.+} beats ** at the same position
        ("/", "root"),
        ("/elsewhere", "catch-all"),
    ],
)
def test_most_specific_route_wins_in_any_order(path: str, winner: str) -> None:
    routes = [
        _route("catch-all", "/**"),
        _route("api-star", "/api/**"),
        _route("api-plus", "/api/{.+}"),
        _route("wild", "/api/users/**"),
        _route("param", "/api/users/{id}"),
        _route("deep-param", "/api/users/{id}/orders"),
        _route("exact", "/api/users/me"),
        _route("root", "/"),
    ]
    assert _winner(RouteTable(routes), "GET", path) == winner
    assert _winner(RouteTable(routes[::-1]), "GET", path) == winner


def test_literal_earlier_beats_parameter_earlier() -> None:
    routes = [_route("late", "/a/{x}/c"), _route("early", "/a/b/{y}")]
    assert _winner(RouteTable(routes), "GET", "/a/b/c") == "early"
    assert _winner(RouteTable(routes[::-1]), "GET", "/a/b/c") == "early"


def test_more_literals_beat_an_earlier_literal() -> None:
    routes = [_route("two", "/a/b/{x}/{y}"), _route("three", "/{w}/b/c/d")]
    assert _winner(RouteTable(routes), "GET", "/a/b/c/d") == "three"


def test_parameter_then_wildcard_beats_shorter_wildcard() -> None:
    routes = [_route("short", "/a/**"), _route("long", "/a/{x}/**")]
    assert _winner(RouteTable(routes), "GET", "/a/b/c") == "long"
    assert _winner(RouteTable(routes), "GET", "/a") == "short"


def test_host_route_beats_more_specific_route_without_host() -> None:
    routes = [_route("any", "/api/users/me"), _route("tenant", "/**", host="tenant.example")]
    table = RouteTable(routes)
    assert _winner(table, "GET", "/api/users/me", "tenant.example") == "tenant"
    assert _winner(table, "GET", "/api/users/me", "other.example") == "any"
    assert _winner(table, "GET", "/api/users/me") == "any"


@pytest.mark.parametrize("host", ["TENANT.example", "tenant.example:8443", "tenant.example."])
def test_host_match_ignores_case_port_and_final_dot(host: str) -> None:
    table = RouteTable([_route("any", "/x"), _route("tenant", "/x", host="tenant.example")])
    assert _winner(table, "GET", "/x", host) == "tenant"


def test_ipv6_host_literal() -> None:
    table = RouteTable([_route("any", "/x"), _route("v6", "/x", host="[::1]")])
    assert _winner(table, "GET", "/x", "[::1]:8080") == "v6"


def test_method_is_part_of_the_match() -> None:
    routes = [_route("read-one", "/orders/{id}", "GET"), _route("write-all", "/orders/**", "POST")]
    table = RouteTable(routes)
    assert _winner(table, "GET", "/orders/7") == "read-one"
    assert _winner(table, "POST", "/orders/7") == "write-all"


def test_host_route_without_the_method_falls_back_to_generic_route() -> None:
    table = RouteTable([_route("any", "/x", "POST"), _route("tenant", "/x", "GET", host="t.ex")])
    assert _winner(table, "POST", "/x", "t.ex") == "any"
    with pytest.raises(MethodNotAllowed) as caught:
        table.match("DELETE", "/x", "t.ex")
    assert caught.value.allowed == ["GET", "HEAD", "POST"]


def test_get_implies_head() -> None:
    table = RouteTable([_route("r", "/r", "GET")])
    assert _winner(table, "HEAD", "/r") == "r"


def test_head_alone_does_not_imply_get() -> None:
    table = RouteTable([_route("r", "/r", "HEAD")])
    with pytest.raises(MethodNotAllowed):
        table.match("GET", "/r")


def test_405_lists_the_sorted_union_of_matching_routes_methods() -> None:
    table = RouteTable(
        [
            _route("a", "/things/{id}", "PUT"),
            _route("b", "/things/**", "POST,GET"),
            _route("c", "/other", "DELETE"),
        ]
    )
    with pytest.raises(MethodNotAllowed) as caught:
        table.match("PATCH", "/things/1")
    assert caught.value.status == 405
    assert caught.value.allowed == ["GET", "HEAD", "POST", "PUT"]
    assert caught.value.headers["Allow"] == "GET, HEAD, POST, PUT"


def test_404_when_no_route_matches_the_path() -> None:
    table = RouteTable([_route("a", "/a", "GET")])
    with pytest.raises(RouteNotFound) as caught:
        table.match("GET", "/b")
    assert caught.value.status == 404


def test_methods_are_case_sensitive() -> None:
    table = RouteTable([_route("a", "/a", "GET")])
    with pytest.raises(MethodNotAllowed):
        table.match("get", "/a")


def test_trailing_slash_is_significant() -> None:
    table = RouteTable([_route("dir", "/a/"), _route("file", "/a"), _route("p", "/b/{x}/")])
    assert _winner(table, "GET", "/a/") == "dir"
    assert _winner(table, "GET", "/a") == "file"
    assert _winner(table, "GET", "/b/1/") == "p"
    with pytest.raises(RouteNotFound):
        table.match("GET", "/b/1")


def test_parameter_does_not_match_a_trailing_empty_segment() -> None:
    table = RouteTable([_route("p", "/a/{x}")])
    for path in ("/a/", "/a", "/a/b/"):
        with pytest.raises(RouteNotFound):
            table.match("GET", path)


def test_params_hold_decoded_segments() -> None:
    table = RouteTable([_route("f", "/files/{owner}/{path:.+}"), _route("u", "/u/*/{id}")])
    found = table.match("GET", canonicalize("/files/j%C3%B6rg/a%20b/c.txt"))
    assert dict(found.params) == {"owner": "j\u00f6rg", "path": "a b/c.txt"}
    assert found.rest == "a b/c.txt"
    assert dict(table.match("GET", "/u/x/7").params) == {"id": "7"}


def test_literal_segments_compare_decoded_and_case_sensitive() -> None:
    table = RouteTable([_route("space", "/my%20files/**"), _route("cafe", "/caf%C3%A9")])
    assert _winner(table, "GET", canonicalize("/my%20files/x")) == "space"
    assert _winner(table, "GET", canonicalize("/caf%c3%a9")) == "cafe"
    with pytest.raises(RouteNotFound):
        table.match("GET", "/CAF\u00c9")


def test_dot_segment_bypass_reaches_the_protected_route() -> None:
    """'/public/%2e%2e/admin' is /admin for the router too, so admin's route (and policy) apply."""
    table = RouteTable([_route("public", "/public/**"), _route("admin", "/admin/**")])
    assert _winner(table, "GET", canonicalize("/public/%2e%2e/admin")) == "admin"
    assert _winner(table, "GET", canonicalize("//admin//x")) == "admin"


def test_same_pattern_with_disjoint_methods_is_fine() -> None:
    table = RouteTable([_route("read", "/a/{x}", "GET"), _route("write", "/a/*", "POST,PUT")])
    assert _winner(table, "HEAD", "/a/1") == "read"
    assert _winner(table, "PUT", "/a/1") == "write"


def test_config_error_lists_every_problem() -> None:
    routes = [
        _route("ok", "/ok"),
        _route("a", "/a/{x}", "GET"),
        _route("bad", "api"),
        _route("b", "/a/*", "GET,POST"),
        _route("c", "/a/{y}", "HEAD"),
        _route("ok", "/other"),
        _route("h", "/h", "get", host="Example.com:80"),
    ]
    with pytest.raises(ConfigError) as caught:
        RouteTable(routes)
    problems = caught.value.problems
    assert "routes[2].pattern: pattern 'api' must start with '/'" in problems
    assert any(
        p.startswith("routes[1] and routes[3] match exactly the same requests: GET,HEAD /a/{x}")
        for p in problems
    )
    assert any(
        p.startswith("routes[1] and routes[4] match exactly the same requests: HEAD")
        for p in problems
    )
    assert any(p.startswith("routes[3] and routes[4]") for p in problems)
    assert "routes[0] and routes[5] are both named 'ok'" in problems
    assert any("routes[6].methods: 'get'" in p for p in problems)
    assert any("routes[6].host: 'Example.com:80'" in p for p in problems)
    assert len(problems) == 7


def test_routes_for_every_method_on_the_same_pattern_clash() -> None:
    with pytest.raises(ConfigError, match=r"routes\[0\] and routes\[1\].*\(any method\) /x"):
        RouteTable([_route("a", "/x"), _route("b", "/x")])


def test_same_pattern_on_different_hosts_is_fine() -> None:
    table = RouteTable([_route("a", "/x", host="a.example"), _route("b", "/x", host="b.example")])
    assert _winner(table, "GET", "/x", "b.example") == "b"


@pytest.mark.parametrize(
    ("pattern", "words"),
    [
        ("api/x", "must start with '/'"),
        ("/a//b", "empty segment"),
        ("/a/**/b", "may only be the last segment"),
        ("/{.+}/b", "may only be the last segment"),
        ("/a/**/", "remove the '/'"),
        ("/{}", "is not a parameter"),
        ("/{1x}", "is not a parameter"),
        ("/{x:[0-9]+}", "the only regex supported in braces is '.+'"),
        ("/{x}/{x}", "'x' is used twice"),
        ("/a*", "must be a whole segment"),
        ("/a{x}", "must be a whole segment"),
        ("/a/../b", "'.' and '..'"),
        ("/a/%2e", "'.' and '..'"),
        ("/a%2Fb", "encoded '/'"),
        ("/a;b", "';'"),
    ],
)
def test_parse_pattern_rejects_with_readable_message(pattern: str, words: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_pattern(pattern)
    assert words in str(caught.value)


def test_parse_pattern_normalizes_parameter_names_away() -> None:
    assert parse_pattern("/a/{x}/{rest:.+}").normalized == "/a/*/{.+}"
    assert parse_pattern("/a/*/{.+}").normalized == "/a/*/{.+}"
    assert parse_pattern("/caf\u00e9/a%20b/").normalized == "/caf%C3%A9/a%20b/"


def test_literal_star_is_not_a_parameter() -> None:
    table = RouteTable([_route("star", "/files/%2A"), _route("any", "/files/{name}")])
    assert _winner(table, "GET", "/files/*") == "star"
    assert _winner(table, "GET", "/files/x") == "any"


def test_candidates_lists_every_match_best_first() -> None:
    table = RouteTable(
        [
            _route("wild", "/api/**"),
            _route("param", "/api/{x}", "GET"),
            _route("post-only", "/api/users", "POST"),
            _route("exact", "/api/users", "GET"),
            _route("tenant", "/api/{.+}", host="t.example"),
        ]
    )
    names = [m.route.name for m in table.candidates("GET", "/api/users", "t.example")]
    assert names == ["tenant", "exact", "param", "wild"]
    assert table.candidates("GET", "/nothing") == []


def test_ordered_is_precedence_order_whatever_the_input_order() -> None:
    routes = [
        _route("wild", "/api/**"),
        _route("param", "/api/{x}"),
        _route("exact", "/api/users"),
        _route("tenant", "/**", host="t.example"),
    ]
    expected = ["tenant", "exact", "param", "wild"]
    assert [r.name for r in RouteTable(routes).ordered()] == expected
    assert [r.name for r in RouteTable(routes[::-1]).ordered()] == expected


def test_explain_rank_says_why() -> None:
    line = RouteTable.explain_rank(_route("w", "/api/{id}/**", host="t.example"))
    assert "host t.example" in line
    assert "trailing wildcard" in line
    assert "1 literal segment" in line
    assert "literal, param, **" in line
    assert "\n" not in line


def test_the_matches_a_table_keeps_are_bounded_in_number_and_length() -> None:
    """Clients choose paths: a table keeps at most MATCHES_KEPT matches, none of a path over
    LONGEST_PATH_KEPT characters, and still finds every match after it starts afresh."""
    table = RouteTable([_route("item", "/items/{id}"), _route("rest", "/files/**")])
    for i in range(2 * MATCHES_KEPT + 5):
        assert table.match("GET", f"/items/{i}").params == {"id": str(i)}
        assert len(table._kept) <= MATCHES_KEPT
    long = "/files/" + "x" * LONGEST_PATH_KEPT
    assert table.match("GET", long).rest == "x" * LONGEST_PATH_KEPT
    assert ("GET", long, None) not in table._kept
    assert table.match("GET", "/items/7") is table.match("GET", "/items/7")  # kept
