"""Which routes an ``exclude_paths`` entry opens, and which ones it must never open.

Pure module (standard library and ``gw.core.patterns``' pattern parser). An exclusion skips
authentication for every method and every host on the paths it covers, before the route's
own policy is read. The rule, checked when the configuration is loaded:

- an exclusion may cover routes that state no ``auth`` of their own (seed 003's way of
  naming public paths: ``exclude_paths: [/api/auth/login]``) and routes with ``auth: none``;
- an exclusion that covers any path of a route with an explicit policy (``required``,
  ``optional``, roles, scopes, issuers) is refused. APPSEC: the route's policy is the more
  specific statement; an exclusion silently overriding it opened a ``roles: [admin]`` route,
  and other methods and routes on the same path, to anyone. Making a route public is
  written on the route (``auth: none``), where a reader of the route sees it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gw.auth.settings import RoutePolicy
from gw.core.patterns import Pattern, SegmentKind, parse_pattern


@dataclass(frozen=True)
class GuardedRoute:
    """A route with an explicit auth policy: where it is written, its name and pattern."""

    where: str  # "routes[3]"
    name: str
    pattern: str
    policy: RoutePolicy


def exclusion_conflicts(exclude_paths: Sequence[str], routes: Sequence[GuardedRoute]) -> list[str]:
    """Return one problem per (exclusion, guarded route) pair the exclusion would open.

    ``exclude_paths`` are the canonical entries of ``auth.exclude_paths``; ``routes`` those
    with an explicit policy other than ``none``.
    """
    problems = []
    for index, exclude in enumerate(exclude_paths):
        for route in routes:
            if route.policy.effective_mode != "none" and overlaps(exclude, route.pattern):
                problems.append(
                    f"auth.exclude_paths[{index}]: {exclude!r} would make route {route.name!r} "
                    f"({route.where}), which {route.policy.describe()}, public"
                )
    return problems


def exclusion_notes(
    exclude_paths: Sequence[str], routes: Sequence[tuple[str, str, str, frozenset[str] | None]]
) -> list[str]:
    """Say which routes each exclusion opens, for ``gw check`` (nothing is opened silently).

    ``routes`` are ``(where, name, pattern, methods)`` of the routes that would otherwise
    authenticate (``methods`` None for every method).
    """
    notes = []
    for index, exclude in enumerate(exclude_paths):
        for where, name, pattern, methods in routes:
            if overlaps(exclude, pattern):
                verbs = ", ".join(sorted(methods)) if methods else "every method"
                notes.append(
                    f"auth.exclude_paths[{index}]: {exclude!r} opens route {name!r} ({where}) "
                    f"to anyone, for {verbs}"
                )
    return notes


def overlaps(exclude: str, route_pattern: str) -> bool:
    """Tell whether some path that ``exclude`` covers is matched by ``route_pattern``.

    ``exclude`` is an exact canonical path, or a prefix ending in ``/**`` (covering the
    prefix, the prefix with a trailing ``/``, and everything under it). A pattern that does
    not parse overlaps nothing (its own problem is reported where routes are checked).
    """
    try:
        route = parse_pattern(route_pattern)
        if exclude.endswith("/**"):
            prefix = exclude[:-3]
            covered = parse_pattern(prefix).segments if prefix else ()
            return _reaches_under(route, [seg.value for seg in covered])
        path = parse_pattern(exclude)
    except ValueError:
        return False
    return _matches(route, [seg.value for seg in path.segments], path.trailing_slash)


def _matches(route: Pattern, segments: list[str], trailing: bool) -> bool:
    """Match a canonical path (split into segments) as the router does."""
    for i, seg in enumerate(route.segments):
        if seg.kind is SegmentKind.STAR:
            return True
        if seg.kind is SegmentKind.PLUS:
            return i < len(segments)
        if i >= len(segments):
            return False
        if seg.kind is SegmentKind.LITERAL and seg.value != segments[i]:
            return False
    return len(route.segments) == len(segments) and route.trailing_slash == trailing


def _reaches_under(route: Pattern, prefix: list[str]) -> bool:
    """Tell whether the route matches some path at or under ``prefix``."""
    for i, seg in enumerate(route.segments):
        if i >= len(prefix) or seg.kind in (SegmentKind.STAR, SegmentKind.PLUS):
            return True  # anything may follow the prefix
        if seg.kind is SegmentKind.LITERAL and seg.value != prefix[i]:
            return False
    return len(route.segments) == len(prefix)
