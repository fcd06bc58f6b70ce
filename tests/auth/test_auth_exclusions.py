"""``exclude_paths`` against route policies: an exclusion may open routes that state no auth
policy (seed 003's way of naming public paths), never one whose own policy asks for more."""

from __future__ import annotations

import pytest

from gw.auth import RoutePolicy
from gw.auth.exclusions import GuardedRoute, exclusion_conflicts, exclusion_notes, overlaps


@pytest.mark.parametrize(
    ("exclude", "pattern", "expected"),
    [
        # exact exclusions: does the route match that very path?
        ("/api/health", "/api/health", True),
        ("/api/health", "/api/**", True),
        ("/api/health", "/api/{name}", True),
        ("/api/health", "/api/*", True),
        ("/api/health", "/api/{.+}", True),
        ("/api/health", "/api/health/", False),
        ("/api/health", "/api/health/**", True),  # ** matches zero segments
        ("/api/health", "/api/health/{.+}", False),
        ("/api/health/", "/api/health/", True),
        ("/api/health/", "/api/health", False),
        ("/api/health", "/api/other", False),
        ("/api/health", "/api", False),
        ("/", "/", True),
        ("/", "/**", True),
        # prefix exclusions: does the route match any path at or under the prefix?
        ("/admin/**", "/admin/users", True),
        ("/admin/**", "/admin", True),
        ("/admin/**", "/admin/", True),
        ("/admin/**", "/{section}/users", True),
        ("/admin/**", "/**", True),
        ("/admin/**", "/{.+}", True),
        ("/admin/**", "/adminx/users", False),
        ("/admin/**", "/", False),
        ("/admin/users/**", "/admin", False),
        ("/admin/users/**", "/admin/", False),
        ("/admin/users/**", "/admin/{id}/x", True),
        ("/admin/users/**", "/admin/groups/**", False),
        ("/**", "/anything/{id}", True),
        ("/**", "/", True),
    ],
)
def test_which_exclusions_reach_which_route_patterns(
    exclude: str, pattern: str, expected: bool
) -> None:
    assert overlaps(exclude, pattern) is expected


def guarded(index: int, name: str, pattern: str, **policy: object) -> GuardedRoute:
    return GuardedRoute(f"routes[{index}]", name, pattern, RoutePolicy.model_validate(policy))


def test_exclusion_over_a_role_route_is_refused_with_both_locations() -> None:
    routes = [
        guarded(0, "users", "/api/users/**", roles=[]),
        guarded(3, "admin", "/admin/**", roles=["admin"]),
    ]
    assert exclusion_conflicts(["/api/health", "/admin/**"], routes) == [
        "auth.exclude_paths[1]: '/admin/**' would make route 'admin' (routes[3]), which "
        "requires roles [admin], public"
    ]


@pytest.mark.parametrize(
    ("policy", "described"),
    [
        ({}, "requires authentication"),
        ({"mode": "required"}, "requires authentication"),
        ({"mode": "optional"}, "has auth: optional"),
        ({"scopes": ["orders:write"]}, "requires scopes [orders:write]"),
        ({"issuers": ["main"]}, "accepts only issuers [main]"),
        ({"roles": {"main": ["admin"]}}, "requires roles {main: [admin]}"),
        ({"roles": ["a", "b"], "scopes": ["s"]}, "requires roles [a, b] and requires scopes [s]"),
    ],
)
def test_every_explicit_policy_is_protected(policy: dict[str, object], described: str) -> None:
    [problem] = exclusion_conflicts(["/api/**"], [guarded(1, "r", "/api/orders/{id}", **policy)])
    assert problem == (
        f"auth.exclude_paths[0]: '/api/**' would make route 'r' (routes[1]), which "
        f"{described}, public"
    )


def test_routes_meant_to_be_public_do_not_conflict() -> None:
    routes = [guarded(0, "open", "/api/health", mode="none")]
    assert exclusion_conflicts(["/api/health", "/api/**"], routes) == []


def test_every_conflict_is_reported_at_once() -> None:
    routes = [guarded(0, "a", "/a/**", roles=["x"]), guarded(1, "b", "/a/b", mode="optional")]
    problems = exclusion_conflicts(["/a/b", "/a/**"], routes)
    assert [p.split(" would make ")[1].split(",")[0] for p in problems] == [
        "route 'a' (routes[0])",
        "route 'b' (routes[1])",
        "route 'a' (routes[0])",
        "route 'b' (routes[1])",
    ]


def test_notes_name_every_route_and_method_an_exclusion_opens() -> None:
    routes = [
        ("routes[0]", "login", "/api/auth/login", frozenset({"POST"})),
        ("routes[1]", "auth", "/api/auth/**", None),
        ("routes[2]", "users", "/api/users/**", None),
    ]
    assert exclusion_notes(["/api/auth/login"], routes) == [
        "auth.exclude_paths[0]: '/api/auth/login' opens route 'login' (routes[0]) to anyone, "
        "for POST",
        "auth.exclude_paths[0]: '/api/auth/login' opens route 'auth' (routes[1]) to anyone, "
        "for every method",
    ]
