"""Properties of route precedence, checked against a naive reference matcher written here.

The reference sorts the routes by the documented precedence rules and takes the first route
that matches, segment by segment, host and conditions (headers, query, cookies) included. It
shares no code with ``gw.core.routing`` or ``gw.core.conditions``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import product
from urllib.parse import parse_qsl, unquote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gw.core.conditions import Condition, RequestView
from gw.core.headers import GATEWAY_OWNED, Headers
from gw.core.paths import canonicalize, encode_path
from gw.core.routes import Route
from gw.core.routing import RouteTable
from gw.errors import ConfigError, InvalidPath, MethodNotAllowed, RouteNotFound

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

HOST = "tenant.example"
WILDCARD = "*.example"  # serves tenant.example and deep.tenant.example, not example
METHODS = ["GET", "HEAD", "POST", "DELETE"]
LITERALS = ["a", "b", "sp%20ace"]  # as written in config; 'sp%20ace' is 'sp ace' in a path
PATH_SEGMENTS = ["a", "b", "sp ace", "zz"]
TAILS = ["**", "{.+}", "{rest:.+}"]


# ---------------------------------------------------------------- the reference matcher


@dataclass(frozen=True)
class Outcome:
    """What a request ends with: a route name, or 404, or 405 with the allowed methods."""

    winner: str | None
    status: int = 200
    allowed: tuple[str, ...] = ()


def _pattern_parts(pattern: str) -> tuple[list[str], bool]:
    if pattern == "/":
        return [], False
    body = pattern[1:]
    return body.rstrip("/").split("/"), body.endswith("/")


def _kind(part: str) -> int:
    """0 literal, 1 parameter, 2 trailing {.+}, 3 trailing **."""
    if part == "**":
        return 3
    if part.endswith(".+}"):
        return 2
    if part == "*" or part.startswith("{"):
        return 1
    return 0


def _rule_class(route: Route[str]) -> int:
    """0 exact, 1 parameters without trailing wildcard, 2 trailing wildcard."""
    kinds = [_kind(part) for part in _pattern_parts(route.pattern)[0]]
    return 2 if kinds and kinds[-1] >= 2 else int(any(k != 0 for k in kinds))


def _host_rank(host: str | None) -> int:
    """0 an exact host, 1 a wildcard host, 2 no host."""
    return 2 if host is None else 1 if host.startswith("*.") else 0


def _host_matches(route_host: str | None, host: str | None) -> bool:
    if route_host is None or route_host == host:
        return True
    return bool(host and route_host.startswith("*.") and host.endswith(route_host[1:]))


def reference_key(route: Route[str]) -> tuple[object, ...]:
    """The documented precedence: host, class, literal count, kinds, number of conditions."""
    kinds = [_kind(part) for part in _pattern_parts(route.pattern)[0]]
    return (
        _host_rank(route.host),
        _rule_class(route),
        -kinds.count(0),
        kinds,
        -len(route.conditions),
    )


# What a request carries for conditions: header x-a, the raw query, the Cookie header.
Carried = tuple[str | None, str, str | None]
NOTHING: Carried = (None, "", None)


def _carried_values(source: str, carried: Carried) -> list[str]:
    header, query, cookie = carried
    if source == "header":
        return [] if header is None else [header]
    if source == "query":
        return [v for k, v in parse_qsl(query, keep_blank_values=True) if k == "q"]
    parts = (cookie or "").split("; ") if cookie else []
    return [part.split("=", 1)[1] for part in parts if part.startswith("c=")]


def _reference_holds(condition: Condition, carried: Carried) -> bool:
    """A condition's documented meaning: a value test needs exactly one value."""
    values = _carried_values(condition.source, carried)
    if condition.kind in ("present", "absent"):
        return bool(values) == (condition.kind == "present")
    if len(values) != 1:
        return False
    if condition.kind == "prefix":
        return values[0].startswith(condition.values[0])
    return values[0] in condition.values


def _conditions_hold(route: Route[str], carried: Carried) -> bool:
    return all(_reference_holds(c, carried) for c in route.conditions)


def _path_matches(pattern: str, path: str) -> bool:
    parts, pattern_slash = _pattern_parts(pattern)
    segments, path_slash = _pattern_parts(path)
    for i, part in enumerate(parts):
        if _kind(part) == 3:
            return True
        if _kind(part) == 2:
            return len(segments) > i
        if i >= len(segments) or (_kind(part) == 0 and unquote(part) != segments[i]):
            return False
    return len(segments) == len(parts) and path_slash == pattern_slash


def _allows(route: Route[str], method: str) -> bool:
    methods = route.methods
    return methods is None or method in methods or (method == "HEAD" and "GET" in methods)


def reference_match(
    routes: list[Route[str]], method: str, path: str, host: str | None, carried: Carried = NOTHING
) -> Outcome:
    """Loop over the routes in precedence order and take the first that matches."""
    on_path = [
        r
        for r in routes
        if _host_matches(r.host, host)
        and _path_matches(r.pattern, path)
        and _conditions_hold(r, carried)
    ]
    for route in sorted(on_path, key=reference_key):
        if _allows(route, method):
            return Outcome(route.name)
    if not on_path:
        return Outcome(None, 404)
    allowed = {m for r in on_path for m in (r.methods or ())}
    allowed |= {"HEAD"} if "GET" in allowed else set()
    return Outcome(None, 405, tuple(sorted(allowed)))


def view_of(carried: Carried) -> RequestView:
    header, query, cookie = carried
    headers = [("X-A", header)] if header is not None else []
    headers += [("Cookie", cookie)] if cookie is not None else []
    return RequestView(Headers(headers), query, GATEWAY_OWNED)


def compiled_match(
    table: RouteTable[str], method: str, path: str, host: str | None, carried: Carried = NOTHING
) -> Outcome:
    try:
        return Outcome(table.match(method, path, host, view_of(carried)).route.name)
    except RouteNotFound:
        return Outcome(None, 404)
    except MethodNotAllowed as ex:
        return Outcome(None, 405, tuple(ex.allowed))


# ---------------------------------------------------------------- strategies


def _all_patterns() -> list[str]:
    """Every pattern over the small alphabet, shortest first (so failures shrink to them)."""
    bases: list[list[str]] = [[]]
    for _ in range(3):
        bases += [[*base, part] for base in bases if len(base) == len(bases[-1]) for part in PARTS]
    found = []
    for base in bases:
        parts = _unique_names(base)
        found.append("/" + "/".join(parts))
        found += ["/" + "/".join(parts) + "/"] if parts else []
        found += ["/" + "/".join([*parts, tail]) for tail in TAILS]
    return sorted(set(found), key=lambda p: (len(p), p))


def _unique_names(parts: list[str]) -> list[str]:
    return [f"{{p{i}}}" if part == "{p}" else part for i, part in enumerate(parts)]


PARTS = [*LITERALS, "{p}", "*"]
PATTERNS = _all_patterns()
METHOD_SETS = [
    None,
    *(
        frozenset(m.split())
        for m in ["GET", "POST", "GET POST", "HEAD", "DELETE", "GET DELETE POST"]
    ),
]


def _signature(route: Route[str]) -> tuple[str | None, str]:
    """Host and pattern with parameter names erased: equal signatures match equal paths."""
    parts = _pattern_parts(route.pattern)[0]
    erased = ["*" if _kind(p) == 1 else "{.+}" if _kind(p) == 2 else p for p in parts]
    return route.host, "/".join(erased) + ("/" if route.pattern.endswith("/") else "")


def _effective(methods: frozenset[str] | None) -> set[str]:
    if methods is None:
        return set(METHODS)
    return set(methods) | ({"HEAD"} if "GET" in methods else set())


# Every value a condition of CONDITION_SETS can tell apart: enough to find a request that
# satisfies two routes' conditions at once, when there is one.
_WITNESSES = [None, "1", "2", "12", "3"]
_WITNESS_REQUESTS: list[Carried] = [
    (h, "" if q is None else f"q={q}", None if c is None else f"c={c}")
    for h, q, c in product(_WITNESSES, repeat=3)
]


def _one_request_satisfies_both(a: Route[str], b: Route[str]) -> bool:
    return any(
        _conditions_hold(a, carried) and _conditions_hold(b, carried)
        for carried in _WITNESS_REQUESTS
    )


def _without_clashes(routes: list[Route[str]]) -> list[Route[str]]:
    """Drop routes that would be a config error: same signature, overlapping methods, as many
    conditions, and some request that satisfies both routes' conditions."""
    kept: list[Route[str]] = []
    for route in routes:
        if not any(
            _signature(other) == _signature(route)
            and _effective(other.methods) & _effective(route.methods)
            and len(other.conditions) == len(route.conditions)
            and _one_request_satisfies_both(other, route)
            for other in kept
        ):
            kept.append(route)
    return kept


def _conditions(source: str, name: str) -> list[Condition]:
    return [
        Condition(source, name, "equals", ("1",)),
        Condition(source, name, "equals", ("1", "2")),
        Condition(source, name, "prefix", ("1",)),
        Condition(source, name, "present"),
        Condition(source, name, "absent"),
    ]


_HEADER, _QUERY, _COOKIE = (
    _conditions("header", "x-a"),
    _conditions("query", "q"),
    _conditions("cookie", "c"),
)
CONDITION_SETS: list[tuple[Condition, ...]] = [
    (),
    (),
    (),
    *((c,) for c in _HEADER + _QUERY + _COOKIE),
    *((h, q) for h, q in zip(_HEADER, _QUERY[1:] + _QUERY[:1], strict=True)),
    *((q, c) for q, c in zip(_QUERY, _COOKIE[2:] + _COOKIE[:2], strict=True)),
]


def route_sets(
    hosts: bool = True, patterns: list[str] = PATTERNS, conditions: bool = True
) -> st.SearchStrategy[list[Route[str]]]:
    """Draw up to 12 routes without config errors (one draw per field: data generation is the
    slow part of these tests)."""
    route = st.tuples(
        st.sampled_from(patterns),
        st.sampled_from(METHOD_SETS),
        st.sampled_from([None, None, HOST, WILDCARD] if hosts else [None]),
        st.sampled_from(CONDITION_SETS if conditions else [()]),
    )
    return st.lists(route, min_size=1, max_size=12).map(_to_routes)


Drawn = tuple[str, frozenset[str] | None, str | None, tuple[Condition, ...]]


def _to_routes(drawn: list[Drawn]) -> list[Route[str]]:
    routes = [
        Route(f"r{i}", pattern, f"r{i}", methods=methods, host=host, conditions=conditions)
        for i, (pattern, methods, host, conditions) in enumerate(drawn)
    ]
    return _without_clashes(routes)


@st.composite
def paths(draw: st.DrawFn) -> str:
    segments = draw(st.lists(st.sampled_from(PATH_SEGMENTS), max_size=5))
    if not segments:
        return "/"
    return "/" + "/".join(segments) + ("/" if draw(st.booleans()) else "")


CARRIED = st.tuples(
    st.sampled_from([None, "1", "2", "12", "1,2"]),
    st.sampled_from(["", "q=1", "q=2", "q=12", "q=1&q=2", "%71=1", "q=1&%71=1", "q"]),
    st.sampled_from([None, "c=1", "c=2", "c=12", "c=1; c=2", "a=1; c=1"]),
)
REQUESTS = st.tuples(
    st.sampled_from(METHODS),
    paths(),
    st.sampled_from([None, HOST, "deep.tenant.example", "example", "other"]),
    CARRIED,
)
Request = tuple[str, str, str | None, Carried]


# ---------------------------------------------------------------- properties


@SETTINGS
@given(route_sets(), st.lists(REQUESTS, min_size=1, max_size=8))
def test_compiled_table_picks_the_same_route_as_the_naive_reference(
    routes: list[Route[str]], requests: list[Request]
) -> None:
    """The trie picks what a plain loop over routes sorted by the documented rules picks."""
    table = RouteTable(routes)
    for method, path, host, carried in requests:
        assert compiled_match(table, method, path, host, carried) == reference_match(
            routes, method, path, host, carried
        )


def _found(table: RouteTable[str], method: str, path: str, host: str | None) -> object:
    """The whole match (route, parameters, rest), or the refusal."""
    try:
        match = table.match(method, path, host)
    except (RouteNotFound, MethodNotAllowed) as ex:
        return type(ex).__name__, getattr(ex, "allowed", None)
    return match.route.name, dict(match.params), match.rest


@SETTINGS
@given(route_sets(conditions=False), st.lists(REQUESTS, min_size=1, max_size=8))
def test_a_kept_match_is_the_match_found_afresh(
    routes: list[Route[str]], requests: list[Request]
) -> None:
    """Without conditions a table keeps the matches it finds: asked again, in any order, it
    answers what a table that never saw the request answers, and the reference's route."""
    table = RouteTable(routes)
    assert not table.conditional
    for method, path, host, _ in requests + requests[::-1] + requests:
        assert _found(table, method, path, host) == _found(RouteTable(routes), method, path, host)
        assert compiled_match(table, method, path, host) == reference_match(
            routes, method, path, host, NOTHING
        )


@SETTINGS
@given(route_sets(), st.randoms(use_true_random=False), st.lists(REQUESTS, min_size=1, max_size=8))
def test_shuffling_the_routes_never_changes_the_winner(
    routes: list[Route[str]], rng: random.Random, requests: list[Request]
) -> None:
    """The most specific route wins whatever order the routes are written in."""
    shuffled = list(routes)
    rng.shuffle(shuffled)
    table, reshuffled = RouteTable(routes), RouteTable(shuffled)
    assert [r.name for r in table.ordered()] == [r.name for r in reshuffled.ordered()]
    for method, path, host, carried in requests:
        assert compiled_match(table, method, path, host, carried) == compiled_match(
            reshuffled, method, path, host, carried
        )


@SETTINGS
@given(route_sets(), st.lists(REQUESTS, min_size=1, max_size=8))
def test_a_wildcard_never_shadows_a_more_specific_route(
    routes: list[Route[str]], requests: list[Request]
) -> None:
    """If an exact or parameter route (of the same or a better host) matches, it wins."""
    table = RouteTable(routes)
    by_name = {r.name: r for r in routes}
    for method, path, host, carried in requests:
        outcome = compiled_match(table, method, path, host, carried)
        if outcome.winner is None:
            continue
        winner = by_name[outcome.winner]
        if _rule_class(winner) != 2:
            continue
        shadowed = [
            r.name
            for r in routes
            if _rule_class(r) < 2
            and _host_matches(r.host, host)
            and _host_rank(r.host) <= _host_rank(winner.host)  # same or better host rank
            and _path_matches(r.pattern, path)
            and _allows(r, method)
            and _conditions_hold(r, carried)
        ]
        assert shadowed == [], f"{winner.pattern} won over {shadowed} for {method} {path}"


@SETTINGS
@given(route_sets(), st.lists(REQUESTS, min_size=1, max_size=8))
def test_best_candidate_is_the_match(routes: list[Route[str]], requests: list[Request]) -> None:
    """`gw explain` lists candidates best first: its first one is the route that serves."""
    table = RouteTable(routes)
    for method, path, host, carried in requests:
        candidates = table.candidates(method, path, host, view_of(carried))
        outcome = compiled_match(table, method, path, host, carried)
        assert [c.route.name for c in candidates[:1]] == (
            [outcome.winner] if outcome.winner else []
        )


FEW_PATTERNS = ["/a", "/{p0}", "/a/**", "/**"]  # so that routes share paths, and conditions decide
FEW_REQUESTS = st.tuples(
    st.sampled_from(METHODS),
    st.sampled_from(["/a", "/b", "/a/b"]),
    st.sampled_from([None, HOST, "deep.tenant.example"]),
    CARRIED,
)


@SETTINGS
@given(
    route_sets(patterns=FEW_PATTERNS),
    st.randoms(use_true_random=False),
    st.lists(FEW_REQUESTS, min_size=1, max_size=12),
)
def test_on_shared_paths_conditions_pick_the_reference_route_in_any_order(
    routes: list[Route[str]], rng: random.Random, requests: list[Request]
) -> None:
    """Among routes of one path, the route with more conditions that hold wins, whatever order
    the routes are written in; one with conditions that fail is passed over."""
    shuffled = list(routes)
    rng.shuffle(shuffled)
    table, reshuffled = RouteTable(routes), RouteTable(shuffled)
    for method, path, host, carried in requests:
        expected = reference_match(routes, method, path, host, carried)
        assert compiled_match(table, method, path, host, carried) == expected
        assert compiled_match(reshuffled, method, path, host, carried) == expected


@SETTINGS
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["/a", "/{p0}"]),
            st.sampled_from(METHOD_SETS),
            st.sampled_from([None, HOST]),
            st.sampled_from(CONDITION_SETS),
        ),
        min_size=2,
        max_size=2,
    )
)
def test_two_routes_one_request_could_match_at_equal_rank_are_refused(pair: list[Drawn]) -> None:
    """A config is refused exactly when some request would match two routes of equal rank."""
    routes = [
        Route(f"r{i}", pattern, f"r{i}", methods=methods, host=host, conditions=conditions)
        for i, (pattern, methods, host, conditions) in enumerate(pair)
    ]
    clash = len(_without_clashes(routes)) < 2
    try:
        RouteTable(routes)
    except ConfigError as ex:
        assert clash, str(ex)
        assert "routes[0] and routes[1]" in str(ex)
    else:
        assert not clash


RAW_SEGMENTS = st.sampled_from(
    ["a", "%61", "b", "%62", "sp%20ace", "sp%20ac%65", ".", "%2e", "..", "%2E%2E", "", "zz"]
)


@SETTINGS
@given(route_sets(hosts=False), st.lists(RAW_SEGMENTS, max_size=6), st.sampled_from(METHODS))
def test_upstream_path_routes_like_the_client_path(
    routes: list[Route[str]], raw_segments: list[str], method: str
) -> None:
    """The route for a raw path equals the route for what the upstream receives, re-read."""
    try:
        canonical = canonicalize("/" + "/".join(raw_segments))
    except InvalidPath:
        return
    upstream_view = canonicalize(encode_path(canonical))
    table = RouteTable(routes)
    assert compiled_match(table, method, canonical, None) == compiled_match(
        table, method, upstream_view, None
    )
    assert compiled_match(table, method, canonical, None) == reference_match(
        routes, method, canonical, None
    )
