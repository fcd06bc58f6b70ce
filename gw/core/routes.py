"""Configured routes: their fields checked, duplicates refused, and their precedence order.

Precedence: the most specific route wins, whatever the order of the routes in the file.

1. A route with an exact ``host`` beats one with a wildcard host (``*.example.com``; the
   longer suffix first), which beats a route without a host.
2. Then by class: a fully literal (exact) pattern beats a pattern with parameters or ``*`` but
   no trailing wildcard, which beats a pattern ending in a trailing wildcard.
3. Then more literal segments beat fewer.
4. Then the segment kinds are compared left to right, literal > parameter (``{id}``, ``*``) >
   trailing ``{.+}`` > trailing ``**``; the first difference decides.
5. Then more conditions (``gw.core.conditions``) beat fewer. Two routes that could match one
   request and rank the same on all of this are a config error.

Pure module: imports only the standard library and other pure gw modules.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from gw.core.conditions import Condition, compatible
from gw.core.patterns import Pattern, parse_pattern

T = TypeVar("T")

_METHOD = re.compile(r"[A-Z][A-Z0-9_-]*")
_HOST = re.compile(r"(?:\*\.)?[a-z0-9_-]+(?:\.[a-z0-9_-]+)*|\[[0-9a-f:.]+\]")


@dataclass(frozen=True)
class Route(Generic[T]):
    """A configured route: a pattern, optional method, host and condition limits, a payload.

    ``host`` is exact or ``*.`` and a suffix (any subdomain, at any depth, not the suffix
    itself); ``conditions`` must all hold for the route to serve a request.
    """

    name: str
    pattern: str
    payload: T
    methods: frozenset[str] | None = None
    host: str | None = None
    conditions: tuple[Condition, ...] = ()


def effective_methods(route: Route[T]) -> frozenset[str] | None:
    """Return the route's methods with HEAD added when GET is allowed."""
    if route.methods is None or "GET" not in route.methods:
        return route.methods
    return route.methods | {"HEAD"}


def sort_key(route: Route[T], pattern: Pattern) -> tuple[object, ...]:
    """Return the precedence key; the fields after the kinds only make the order total."""
    methods = sorted(route.methods) if route.methods is not None else ["~"]
    return (
        host_rank(route.host),
        pattern.rule_class,
        -pattern.literal_count,
        tuple(seg.kind for seg in pattern.segments),
        -len(route.conditions),
        pattern.normalized,
        route.host or "",
        methods,
        route.name,
    )


def host_rank(host: str | None) -> tuple[int, int]:
    """Exact hosts first, then wildcard hosts (longer suffix first), then no host."""
    if host is None:
        return (2, 0)
    return (1, -len(host)) if host.startswith("*.") else (0, 0)


def parse_all(routes: Sequence[Route[T]]) -> tuple[list[Pattern | None], list[str]]:
    """Parse every pattern and check every field, collecting all problems."""
    patterns: list[Pattern | None] = []
    problems: list[str] = []
    names: dict[str, int] = {}
    for i, route in enumerate(routes):
        try:
            patterns.append(parse_pattern(route.pattern))
        except ValueError as ex:
            problems.append(f"routes[{i}].pattern: {ex}")
            patterns.append(None)
        problems += [f"routes[{i}].{problem}" for problem in _check_fields(route)]
        if route.name in names:
            problems.append(
                f"routes[{names[route.name]}] and routes[{i}] are both named {route.name!r}"
            )
        names.setdefault(route.name, i)
    return patterns, problems


def _check_fields(route: Route[T]) -> list[str]:
    """Return the problems with a route's methods and host."""
    problems = []
    if route.methods is not None and not route.methods:
        problems.append("methods: empty; leave it unset to allow every method")
    for method in sorted(route.methods or ()):
        if not _METHOD.fullmatch(method):
            problems.append(f"methods: {method!r} is not an upper-case HTTP method")
    if route.host is not None and not _HOST.fullmatch(route.host):
        problems.append(f"host: {route.host!r} must be a lower-case host name without port")
    return problems


def find_duplicates(
    routes: Sequence[Route[T]], patterns: list[Pattern | None], explicit_only: frozenset[str]
) -> list[str]:
    """Report pairs of routes that would match the same requests."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, (route, pattern) in enumerate(zip(routes, patterns, strict=True)):
        if pattern is not None:
            groups.setdefault((route.host or "", pattern.normalized), []).append(i)
    problems = []
    for members in groups.values():
        for pos, i in enumerate(members):
            for j in members[pos + 1 :]:
                overlap = _overlap(routes[i], routes[j], explicit_only)
                if overlap is not None and not _conditions_separate(routes[i], routes[j]):
                    problems.append(_duplicate_message(i, j, routes, overlap))
    return problems


def _conditions_separate(first: Route[T], second: Route[T]) -> bool:
    """Whether conditions rank one route above the other, or no request satisfies both."""
    a, b = first.conditions, second.conditions
    return len(a) != len(b) or not compatible(a, b)


def _overlap(first: Route[T], second: Route[T], explicit_only: frozenset[str]) -> str | None:
    """Return the methods two routes share, as text, or None when they share none."""
    a, b = effective_methods(first), effective_methods(second)
    if a is None and b is None:
        return "(any method)"
    shared = frozenset.intersection(*(methods for methods in (a, b) if methods is not None))
    if a is None or b is None:
        shared -= explicit_only  # a route without methods does not serve these
    return ",".join(sorted(shared)) or None


def _duplicate_message(i: int, j: int, routes: Sequence[Route[T]], methods: str) -> str:
    """Describe two routes that match the same requests."""
    where = f" on host {routes[i].host}" if routes[i].host else ""
    names = f"(routes {routes[i].name!r} and {routes[j].name!r})"
    if not routes[i].conditions and not routes[j].conditions:
        return (
            f"routes[{i}] and routes[{j}] match exactly the same requests: "
            f"{methods} {routes[i].pattern}{where} {names}"
        )
    shown = [" and ".join(c.describe() for c in routes[k].conditions) for k in (i, j)]
    return (
        f"routes[{i}] and routes[{j}] can both match one request with the same precedence: "
        f"{methods} {routes[i].pattern}{where} with {shown[0]} / with {shown[1]} {names}; "
        "make their conditions exclude each other, or give one more conditions"
    )
