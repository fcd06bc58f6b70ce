"""Aggregate part templates: compiled once, filled per request, never able to change the
shape of the upstream request line."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gw.errors import ConfigError
from gw.shaping.compose import compile_aggregate
from gw.shaping.settings import AggregateSettings
from gw.shaping.templates import InvalidParameter, MissingParameter, RequestValues, parse_template


@dataclass(frozen=True)
class Who:
    subject: str
    role: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)


def render(
    template: str,
    params: Mapping[str, str] | None = None,
    query: str = "",
    identity: Who | None = None,
) -> str:
    return parse_template(template).render(RequestValues(params or {}, query, identity))


def test_seed_style_template_fills_identity_and_query_with_default() -> None:
    template = "/orders?user={identity.sub}&limit={query.limit:-3}"
    assert render(template, identity=Who("usr_8a3f")) == "/orders?user=usr_8a3f&limit=3"
    assert render(template, query="limit=10", identity=Who("u")) == "/orders?user=u&limit=10"


def test_default_applies_to_an_empty_value_as_in_the_shell() -> None:
    assert render("/o?limit={query.limit:-3}", query="limit=") == "/o?limit=3"
    assert render("/o?limit={query.limit:-}", query="") == "/o?limit="


def test_first_query_value_wins_and_plus_is_a_space() -> None:
    assert render("/s?q={query.q}", query="q=a+b&q=evil") == "/s?q=a%20b"


def test_params_role_and_claims_fill_in() -> None:
    who = Who("u1", role="admin", claims={"tenant": "acme", "level": 3, "beta": True})
    path = "/t/{identity.claims.tenant}/{params.id}?r={identity.role}&l={identity.claims.level}"
    path += "&b={identity.claims.beta}"
    assert render(path, params={"id": "42"}, identity=who) == "/t/acme/42?r=admin&l=3&b=true"


@pytest.mark.parametrize(
    ("template", "query", "identity", "says"),
    [
        ("/o?l={query.limit}", "", None, "query parameter 'limit'"),
        ("/o?l={query.limit}", "limit=", None, "query parameter 'limit'"),
        ("/u/{identity.sub}", "", None, "verified identity with a subject"),
        ("/u/{identity.role}", "", Who("u"), "verified identity with a role"),
        ("/u/{identity.claims.org}", "", Who("u"), "the claim 'org'"),
    ],
)
def test_missing_value_without_default_is_a_400_naming_it(
    template: str, query: str, identity: Who | None, says: str
) -> None:
    with pytest.raises(MissingParameter) as info:
        render(template, query=query, identity=identity)
    assert info.value.status == 400
    assert info.value.code == "missing_parameter"
    assert says in info.value.message


@pytest.mark.parametrize("value", ["..", ".", "a/b", "a\\b", "%2F", "a;b", "x\ny", "a?b#c"])
def test_path_value_that_could_split_or_climb_is_refused(value: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        render("/users/{identity.sub}", identity=Who(value))
    assert info.value.status == 400


def test_path_value_is_percent_encoded_as_one_segment() -> None:
    assert render("/users/{identity.sub}", identity=Who("Zoë Smith&co")) == (
        "/users/Zo%C3%AB%20Smith%26co"
    )


def test_query_value_cannot_add_a_parameter() -> None:
    path = render("/o?user={identity.sub}&limit=3", identity=Who("x&limit=1000#=+%"))
    assert path == "/o?user=x%26limit%3D1000%23%3D%2B%25&limit=3"
    assert parse_qsl(path.split("?")[1]) == [("user", "x&limit=1000#=+%"), ("limit", "3")]


def test_claim_that_is_not_a_single_value_is_refused() -> None:
    with pytest.raises(InvalidParameter):
        render("/t/{identity.claims.groups}", identity=Who("u", claims={"groups": ["a"]}))


def test_query_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(InvalidParameter):
        render("/o?q={query.q}", query="q=%ff")


@pytest.mark.parametrize(
    ("template", "says"),
    [
        ("/u/{identity.name}", "unknown field '{identity.name}'"),
        ("/u/{user.id}", "known: params.NAME, query.NAME, identity.sub"),
        ("/u/{params.1x}", "unknown field"),
        ("/u/{identity.sub", "unbalanced brace"),
        ("users/{identity.sub}", "must start with a single '/'"),
        ("//evil.example/{identity.sub}", "must start with a single '/'"),
        ("/a/../{identity.sub}", "is not in canonical form"),
        ("/a;b/{identity.sub}", "';' (path parameter)"),
        ("/o?q={query.q}&x=a b", "printable ASCII"),
        ("/u/{identity.sub:-..}", "cannot be used as a path segment"),
    ],
)
def test_bad_template_is_a_readable_config_error(template: str, says: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_template(template)
    assert says in str(info.value)


def test_compile_checks_upstreams_and_route_parameters_with_locations() -> None:
    settings = AggregateSettings.model_validate(
        {
            "parts": [
                {"key": "a", "upstream": "users", "path": "/users/{params.id}"},
                {"key": "b", "upstream": "ordrs", "path": "/orders/{params.user}"},
            ]
        }
    )
    with pytest.raises(ConfigError) as info:
        compile_aggregate(settings, {"users", "orders"}, "/api/{user}", "routes[4].aggregate")
    assert info.value.problems == [
        "routes[4].aggregate.parts[0].path: {params.id}: the route path has no parameter 'id'",
        "routes[4].aggregate.parts[1].upstream: no upstream named 'ordrs' (known: orders, users)",
    ]


def test_spec_says_whether_it_needs_an_identity() -> None:
    def spec(path: str) -> bool:
        part = {"key": "a", "upstream": "u", "path": path}
        settings = AggregateSettings.model_validate({"parts": [part]})
        return compile_aggregate(settings, {"u"}).uses_identity

    assert spec("/x/{identity.claims.org}")
    assert not spec("/x/{query.q}")


@given(st.text(min_size=1, max_size=40))
def test_query_value_always_decodes_back_to_itself_and_adds_no_parameter(value: str) -> None:
    """Whatever a value holds, the upstream reads exactly that value for exactly that key."""
    path = render("/o?user={identity.sub}&limit=3", identity=Who(value))
    query = path.split("?", 1)[1]
    pairs = parse_qsl(query, keep_blank_values=True)
    assert pairs == [("user", value), ("limit", "3")]
    assert "#" not in path and " " not in path


@given(st.text(min_size=1, max_size=40))
def test_path_value_is_one_segment_or_refused(value: str) -> None:
    """A path value either becomes exactly one segment holding the value, or a 400."""
    try:
        path = render("/users/{identity.sub}/profile", identity=Who(value))
    except InvalidParameter:
        return
    segments = path.split("/")
    assert len(segments) == 4 and segments[3] == "profile"
    assert unquote(segments[2]) == value
    assert "?" not in path and "#" not in path and segments[2] not in (".", "..")


def test_claim_with_a_lone_surrogate_is_a_400_not_a_crash() -> None:
    with pytest.raises(InvalidParameter):
        render("/o?org={identity.claims.org}", identity=Who("u", claims={"org": "\ud800"}))
