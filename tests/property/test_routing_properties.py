"""Properties of route precedence, checked against a naive reference matcher written here.

The reference sorts the routes by the documented precedence rules and takes the first route
that matches, segment by segment. It shares no code with ``gw.core.routing``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from urllib.parse import unquote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gw.core.paths import canonicalize, encode_path
from gw.core.routes import Route
from gw.core.routing import RouteTable
from gw.errors import InvalidPath, MethodNotAllowed, RouteNotFound

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

HOST = "tenant.example"
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


def reference_key(route: Route[str]) -> tuple[object, ...]:
    """The documented precedence: host, class, literal count, kinds left to right."""
    kinds = [_kind(part) for part in _pattern_parts(route.pattern)[0]]
    return (route.host is None, _rule_class(route), -kinds.count(0), kinds)


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


def reference_match(routes: list[Route[str]], method: str, path: str, host: str | None) -> Outcome:
    """Loop over the routes in precedence order and take the first that matches."""
    on_path = [r for r in routes if r.host in (None, host) and _path_matches(r.pattern, path)]
    for route in sorted(on_path, key=reference_key):
        if _allows(route, method):
            return Outcome(route.name)
    if not on_path:
        return Outcome(None, 404)
    allowed = {m for r in on_path for m in (r.methods or ())}
    allowed |= {"HEAD"} if "GET" in allowed else set()
    return Outcome(None, 405, tuple(sorted(allowed)))


def compiled_match(table: RouteTable[str], method: str, path: str, host: str | None) -> Outcome:
    try:
        return Outcome(table.match(method, path, host).route.name)
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


def _without_clashes(routes: list[Route[str]]) -> list[Route[str]]:
    """Drop routes that would be a config error: same signature, overlapping methods."""
    kept: list[Route[str]] = []
    for route in routes:
        if not any(
            _signature(other) == _signature(route)
            and _effective(other.methods) & _effective(route.methods)
            for other in kept
        ):
            kept.append(route)
    return kept


def route_sets(hosts: bool = True) -> st.SearchStrategy[list[Route[str]]]:
    """Draw up to 12 routes without config errors (one draw per field: data generation is the
    slow part of these tests)."""
    route = st.tuples(
        st.sampled_from(PATTERNS),
        st.sampled_from(METHOD_SETS),
        st.sampled_from([None, None, HOST] if hosts else [None]),
    )
    return st.lists(route, min_size=1, max_size=12).map(_to_routes)


def _to_routes(drawn: list[tuple[str, frozenset[str] | None, str | None]]) -> list[Route[str]]:
    routes = [
        Route(name=f"r{i}", pattern=pattern, payload=f"r{i}", methods=methods, host=host)
        for i, (pattern, methods, host) in enumerate(drawn)
    ]
    return _without_clashes(routes)


@st.composite
def paths(draw: st.DrawFn) -> str:
    segments = draw(st.lists(st.sampled_from(PATH_SEGMENTS), max_size=5))
    if not segments:
        return "/"
    return "/" + "/".join(segments) + ("/" if draw(st.booleans()) else "")


REQUESTS = st.tuples(st.sampled_from(METHODS), paths(), st.sampled_from([None, HOST, "other"]))


# ---------------------------------------------------------------- properties


@SETTINGS
@given(route_sets(), st.lists(REQUESTS, min_size=1, max_size=8))
def test_compiled_table_picks_the_same_route_as_the_naive_reference(
    routes: list[Route[str]], requests: list[tuple[str, str, str | None]]
) -> None:
    """The trie picks what a plain loop over routes sorted by the documented rules picks."""
    table = RouteTable(routes)
    for method, path, host in requests:
        assert compiled_match(table, method, path, host) == reference_match(
            routes, method, path, host
        )


@SETTINGS
@given(route_sets(), st.randoms(use_true_random=False), st.lists(REQUESTS, min_size=1, max_size=8))
def test_shuffling_the_routes_never_changes_the_winner(
    routes: list[Route[str]], rng: random.Random, requests: list[tuple[str, str, str | None]]
) -> None:
    """The most specific route wins whatever order the routes are written in."""
    shuffled = list(routes)
    rng.shuffle(shuffled)
    table, reshuffled = RouteTable(routes), RouteTable(shuffled)
    assert [r.name for r in table.ordered()] == [r.name for r in reshuffled.ordered()]
    for method, path, host in requests:
        assert compiled_match(table, method, path, host) == compiled_match(
            reshuffled, method, path, host
        )


@SETTINGS
@given(route_sets(), st.lists(REQUESTS, min_size=1, max_size=8))
def test_a_wildcard_never_shadows_a_more_specific_route(
    routes: list[Route[str]], requests: list[tuple[str, str, str | None]]
) -> None:
    """If an exact or parameter route (of the same or a better host) matches, it wins."""
    table = RouteTable(routes)
    by_name = {r.name: r for r in routes}
    for method, path, host in requests:
        outcome = compiled_match(table, method, path, host)
        if outcome.winner is None:
            continue
        winner = by_name[outcome.winner]
        if _rule_class(winner) != 2:
            continue
        shadowed = [
            r.name
            for r in routes
            if _rule_class(r) < 2
            and r.host in (None, host)
            and (r.host is not None or winner.host is None)  # same or better host rank
            and _path_matches(r.pattern, path)
            and _allows(r, method)
        ]
        assert shadowed == [], f"{winner.pattern} won over {shadowed} for {method} {path}"


@SETTINGS
@given(route_sets(), st.lists(REQUESTS, min_size=1, max_size=8))
def test_best_candidate_is_the_match(
    routes: list[Route[str]], requests: list[tuple[str, str, str | None]]
) -> None:
    """`gw explain` lists candidates best first: its first one is the route that serves."""
    table = RouteTable(routes)
    for method, path, host in requests:
        candidates = table.candidates(method, path, host)
        outcome = compiled_match(table, method, path, host)
        assert [c.route.name for c in candidates[:1]] == (
            [outcome.winner] if outcome.winner else []
        )


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
