"""The routes nearest to a request that matched none, and what differed (for ``gw explain``
and the debug line of a live 404).

A route's distance is read field by field, the way an operator reads a route: how many of
the path's segments its pattern accepts before the first that differs, then whether its host
and its methods accept the request. The nearest come first; each says what differed.

Pure module: the standard library and other pure gw modules only.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Generic, TypeVar

from gw.core.conditions import EMPTY_VIEW, RequestView
from gw.core.patterns import Pattern, SegmentKind, parse_pattern
from gw.core.routes import Route, effective_methods

T = TypeVar("T")


@dataclass(frozen=True)
class NearMiss(Generic[T]):
    """A route that did not match, and every reason it did not."""

    route: Route[T]
    differences: tuple[str, ...]


def nearest(
    routes: Sequence[Route[T]],
    method: str,
    path: str,
    host: str | None,
    limit: int = 3,
    view: RequestView | None = None,
) -> list[NearMiss[T]]:
    """Return up to ``limit`` routes nearest to the request, nearest first (ties: precedence).

    ``path`` is canonical; ``host`` the effective host name, lower case, without its port;
    ``view`` what route conditions read (None: no headers, query or cookies).
    """
    segments = path.split("/")[1:] if path != "/" else []
    trailing = path.endswith("/") and path != "/"
    if trailing:
        segments = segments[:-1]
    scored = []
    for rank, route in enumerate(routes):
        accepted, path_difference, likeness = _path_distance(
            _pattern(route.pattern), segments, trailing
        )
        differences = [path_difference] if path_difference else []
        if route.host is not None and not _host_accepts(route.host, host):
            differences.append(
                f"host: the route wants {route.host}, the request has {host or 'no host'}"
            )
        methods = effective_methods(route)
        if methods is not None and method not in methods:
            allowed = ", ".join(sorted(methods))
            differences.append(f"method: {method} is not allowed (the route allows {allowed})")
        failed = [c.describe() for c in route.conditions if not c.holds(view or EMPTY_VIEW)]
        if failed:
            differences.append(f"conditions: {', '.join(failed)} failed")
        if not differences:
            continue  # it matches: not a near miss
        key = (-accepted, -likeness, len(differences), rank)
        scored.append((key, NearMiss(route, tuple(differences))))
    scored.sort(key=lambda pair: pair[0])
    return [miss for _, miss in scored[:limit]]


def describe(misses: Sequence[NearMiss[T]]) -> str:
    """One line naming each near miss and what differed (for the debug log)."""
    return "; ".join(
        f"{miss.route.name} ({miss.route.pattern}): {', '.join(miss.differences)}"
        for miss in misses
    )


def _host_accepts(wanted: str, host: str | None) -> bool:
    """Whether a route's host (exact, or ``*.suffix``) accepts the request's host."""
    if wanted.startswith("*."):
        return host is not None and host.endswith(wanted[1:])
    return wanted == host


@lru_cache(maxsize=1024)
def _pattern(text: str) -> Pattern:
    return parse_pattern(text)


def _path_distance(pattern: Pattern, segments: list[str], trailing: bool) -> tuple[int, str, float]:
    """Return ``(segments accepted, what differed or "", likeness of the first difference)``."""
    want_count, have = len(pattern.segments), len(segments)
    for i, want in enumerate(pattern.segments):
        if want.kind in (SegmentKind.PLUS, SegmentKind.STAR):
            if want.kind is SegmentKind.PLUS and i >= have:
                return i, f"path: {pattern.text} needs at least one segment more", 0.0
            return have, "", 1.0
        if i >= have:
            return i, f"path: {pattern.text} needs {want_count} segments, the path has {have}", 0.0
        got = segments[i]
        if want.kind is SegmentKind.LITERAL and got != want.value:
            likeness = difflib.SequenceMatcher(None, got, want.value).ratio()
            return i, f"path: segment {i + 1} is {got!r}, the route wants {want.value!r}", likeness
        if want.kind is not SegmentKind.LITERAL and not got:
            return i, f"path: segment {i + 1} is empty, the route wants a value", 0.0
    if have > want_count:
        return (
            want_count,
            f"path: {pattern.text} has {want_count} segments, the path has {have}",
            0.0,
        )
    if trailing != pattern.trailing_slash:
        said = "ends" if trailing else "does not end"
        return have, f"path: the path {said} with '/' and the pattern does not agree", 0.5
    return have, "", 1.0
