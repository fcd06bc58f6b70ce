"""Match a request's method, canonical path and host to exactly one configured route.

Precedence: the most specific route wins, whatever the order of the routes in the file
(``gw.core.routes`` orders them).

The method is part of the match: if the most specific routes for a path do not allow the
request's method, a less specific route that allows it wins. ``GET`` implies ``HEAD``. A
route without ``methods`` allows every method except the table's ``explicit_only`` ones
(for the gateway's routes ``TRACE`` and ``CONNECT``), which only a route naming them serves.
The answer is 405 (listing the allowed methods) only when some route matches the path but
none allows the method, and 404 when no route matches the path.

Conditions (``gw.core.conditions``) are part of the match too: a route whose conditions do not
hold is passed over as if its path did not match. They read a ``RequestView``; a table
without conditions never builds or reads one (``RouteTable.conditional``).

Pattern syntax: ``gw.core.patterns``.

Pure module: imports only the standard library and other pure gw modules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Generic, NamedTuple, TypeVar

from gw.core.bounded import KEPT, LONGEST_PATH_KEPT
from gw.core.conditions import EMPTY_VIEW, Condition, RequestView
from gw.core.patterns import Pattern, SegmentKind, parse_pattern
from gw.core.routes import (
    Route,
    effective_methods,
    find_duplicates,
    host_rank,
    parse_all,
    sort_key,
)
from gw.errors import ConfigError, MethodNotAllowed, RouteNotFound

T = TypeVar("T")

_NO_PARAMS: Mapping[str, str] = MappingProxyType({})
# What a 405 lists for a route without ``methods`` (RFC 9110's methods and PATCH).
_STANDARD_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
# APPSEC: TRACE echoes the request back, credentials and cookies included (cross-site
# tracing), and CONNECT asks for a tunnel that gw does not build; a route that leaves out
# ``methods`` means "this API's methods", so it serves neither unless it names them.
EXPLICIT_ONLY_METHODS = frozenset({"TRACE", "CONNECT"})
# Matches kept by a table without conditions (see ``RouteTable.match``), and the longest path
# kept: together they bound the memory clients can make a worker spend on them.
MATCHES_KEPT = KEPT


class RouteMatch(NamedTuple, Generic[T]):
    """The route chosen for a request.

    ``params`` maps parameter names to decoded segment values (a named ``{name:.+}`` maps to
    the same text as ``rest``). ``rest`` is what a trailing wildcard matched, without the
    leading ``/`` but with the path's trailing ``/`` (``42/x/``); ``''`` when none.

    PERF: a named tuple, immutable as a frozen dataclass but made in half its time (one per
    request to a route with parameters or a wildcard).
    """

    route: Route[T]
    params: Mapping[str, str]
    rest: str


@dataclass(frozen=True, eq=False)
class _Entry(Generic[T]):
    """A compiled route: its rank (0 = most specific) and what matching needs."""

    rank: int
    route: Route[T]
    methods: frozenset[str] | None  # with HEAD added where GET is allowed
    params: tuple[tuple[str, int], ...]  # (name, segment index)
    tail_at: int  # index of the first segment a trailing wildcard matches, -1 if none
    tail_name: str
    refused: frozenset[str]  # what the route does not serve when methods is None
    conditions: tuple[Condition, ...]
    static: RouteMatch[T] = field(init=False)

    def __post_init__(self) -> None:
        # PERF: an exact route's match never varies, so it is built once.
        object.__setattr__(self, "static", RouteMatch(self.route, _NO_PARAMS, ""))

    def allows(self, method: str) -> bool:
        """Return whether this route accepts the method."""
        if self.methods is None:
            return method not in self.refused
        return method in self.methods

    def passes(self, view: RequestView) -> bool:
        """Return whether every condition of the route holds for the request."""
        return all(condition.holds(view) for condition in self.conditions)

    def bind(self, segments: list[str], trailing: bool) -> RouteMatch[T]:
        """Build the match for a path that this route matched."""
        if not self.params and self.tail_at < 0:
            return self.static
        params = {name: segments[index] for name, index in self.params}
        rest = ""
        if self.tail_at >= 0:
            rest = "/".join(segments[self.tail_at :])
            rest += "/" if trailing and rest else ""
            if self.tail_name:
                params[self.tail_name] = rest
        return RouteMatch(self.route, params, rest)


class _Node(Generic[T]):
    """One level of the segment trie."""

    __slots__ = ("ends", "ends_slash", "literals", "param", "plus", "star")

    def __init__(self) -> None:
        self.literals: dict[str, _Node[T]] = {}
        self.param: _Node[T] | None = None
        self.ends: list[_Entry[T]] = []  # patterns ending here without '/'
        self.ends_slash: list[_Entry[T]] = []  # patterns ending here with '/'
        self.plus: list[_Entry[T]] = []  # {.+} starting here
        self.star: list[_Entry[T]] = []  # ** starting here

    def insert(self, pattern: Pattern, entry: _Entry[T]) -> None:
        """Add a route under the pattern's path through the trie."""
        node = self
        for seg in pattern.segments:
            if seg.kind is SegmentKind.LITERAL:
                node = node.literals.setdefault(seg.value, _Node())
            elif seg.kind is SegmentKind.PARAM:
                node.param = node.param or _Node()
                node = node.param
            else:
                (node.plus if seg.kind is SegmentKind.PLUS else node.star).append(entry)
                return
        (node.ends_slash if pattern.trailing_slash else node.ends).append(entry)

    def collect(self, segs: list[str], i: int, trailing: bool, out: list[_Entry[T]]) -> None:
        """Append every entry whose pattern matches segs[i:] below this node."""
        if self.star:
            out.extend(self.star)
        if i == len(segs):
            out.extend(self.ends_slash if trailing else self.ends)
            return
        if self.plus:
            out.extend(self.plus)
        child = self.literals.get(segs[i])
        if child is not None:
            child.collect(segs, i + 1, trailing, out)
        if self.param is not None:
            self.param.collect(segs, i + 1, trailing, out)


class _Tier(Generic[T]):
    """The routes of one host (or of every host): an exact-path dict plus a trie."""

    def __init__(self) -> None:
        self.exact: dict[str, list[_Entry[T]]] = {}
        self.trie: _Node[T] = _Node()
        self.has_trie = False

    def add(self, pattern: Pattern, entry: _Entry[T]) -> None:
        """Add one compiled route (entries arrive in rank order)."""
        if pattern.rule_class == 0:
            self.exact.setdefault(_exact_key(pattern), []).append(entry)
        else:
            self.trie.insert(pattern, entry)
            self.has_trie = True

    def best(
        self, method: str, path: str, view: RequestView, seen: list[_Entry[T]]
    ) -> RouteMatch[T] | None:
        """Return the most specific match allowing the method whose conditions hold; add path
        matches to seen."""
        exact = self.exact.get(path)
        if exact is not None:
            for entry in exact:
                # PERF: an entry without conditions never touches the view.
                if entry.allows(method) and (not entry.conditions or entry.passes(view)):
                    return entry.static
            seen.extend(exact)
        if not self.has_trie:
            return None
        segs, trailing = _split(path)
        found: list[_Entry[T]] = []
        self.trie.collect(segs, 0, trailing, found)
        seen.extend(found)
        winner: _Entry[T] | None = None
        for entry in found:
            if (
                entry.allows(method)
                and (winner is None or entry.rank < winner.rank)
                and (not entry.conditions or entry.passes(view))
            ):
                winner = entry
        return None if winner is None else winner.bind(segs, trailing)

    def all(self, path: str) -> list[tuple[_Entry[T], list[str], bool]]:
        """Return every entry matching the path, with the split path."""
        segs, trailing = _split(path)
        found = list(self.exact.get(path, ()))
        self.trie.collect(segs, 0, trailing, found)
        return [(entry, segs, trailing) for entry in found]


class RouteTable(Generic[T]):
    """Routes compiled once into per-host segment tries; matching never scans every route."""

    def __init__(
        self, routes: Sequence[Route[T]], *, explicit_only: frozenset[str] = frozenset()
    ) -> None:
        """Compile the routes.

        Args:
            routes: the routes, in any order.
            explicit_only: methods that a route without ``methods`` does not allow; only a
                route that names them does (``EXPLICIT_ONLY_METHODS`` for the gateway's
                routes; none for tables where "no methods" must mean every method).

        Raises:
            ConfigError: listing every problem (bad patterns, methods, hosts, duplicates).
        """
        parsed, problems = parse_all(routes)
        problems += find_duplicates(routes, parsed, explicit_only)
        if problems:
            raise ConfigError(problems)
        patterns = [pattern for pattern in parsed if pattern is not None]  # all parsed here
        order = sorted(range(len(routes)), key=lambda i: sort_key(routes[i], patterns[i]))
        self._ordered = [routes[i] for i in order]
        self._default: _Tier[T] = _Tier()
        self._hosts: dict[str, _Tier[T]] = {}
        self._wildcards: dict[str, _Tier[T]] = {}  # by suffix: "example.com" for *.example.com
        self.conditional = any(route.conditions for route in routes)
        self._kept: dict[tuple[str, str, str | None], RouteMatch[T]] = {}
        for rank, i in enumerate(order):
            entry = _compile(rank, routes[i], patterns[i], explicit_only)
            self._tier(routes[i].host).add(patterns[i], entry)

    def match(
        self, method: str, path: str, host: str | None = None, view: RequestView | None = None
    ) -> RouteMatch[T]:
        """Return the most specific route for a method, canonical path and request host.

        ``host`` is the request's host (any case, a port is ignored); None matches only routes
        without a host. ``view``: what conditions read (None: a request without headers,
        query or cookies); only needed when ``conditional``.

        Warning:
            ``path`` must come from ``gw.core.paths.canonicalize``: routing a raw or PATH_INFO path
            lets a client choose which route's policies apply.

        Raises:
            MethodNotAllowed: some route matches the path, but none allows the method.
            RouteNotFound: no route matches the path.
        """
        # PERF: without conditions, the match is a function of the method, path and host
        # alone, so it is found once and kept (Kong's router keeps its matches too). APPSEC:
        # clients choose paths: at most MATCHES_KEPT are kept, none longer than
        # LONGEST_PATH_KEPT, and a full table starts afresh; refusals are never kept.
        if self.conditional or len(path) > LONGEST_PATH_KEPT:
            return self._find(method, path, host, view)
        key = (method, path, host)
        found = self._kept.get(key)
        if found is None:
            found = self._find(method, path, host, view)
            if len(self._kept) >= MATCHES_KEPT:
                self._kept.clear()
            self._kept[key] = found
        return found

    def _find(
        self, method: str, path: str, host: str | None, view: RequestView | None
    ) -> RouteMatch[T]:
        """The match of ``match``, searched for."""
        seen: list[_Entry[T]] = []
        view = view or EMPTY_VIEW
        for tier in self._tiers_for(host):
            found = tier.best(method, path, view, seen)
            if found is not None:
                return found
        seen = [entry for entry in seen if entry.passes(view)]
        if seen:
            raise MethodNotAllowed(method, _allowed_methods(seen))
        raise RouteNotFound("no route matches this path")

    def candidates(
        self, method: str, path: str, host: str | None = None, view: RequestView | None = None
    ) -> list[RouteMatch[T]]:
        """Return every route matching path, host, method and conditions, most specific first."""
        return [hit for hit, holds in self.considered(method, path, host, view) if holds]

    def considered(
        self, method: str, path: str, host: str | None = None, view: RequestView | None = None
    ) -> list[tuple[RouteMatch[T], bool]]:
        """Return every route matching path, host and method, most specific first, each with
        whether its conditions hold (for ``gw explain``)."""
        view = view or EMPTY_VIEW
        found = [hit for tier in self._tiers_for(host) for hit in tier.all(path)]
        found.sort(key=lambda hit: hit[0].rank)
        return [
            (entry.bind(segs, tr), entry.passes(view))
            for entry, segs, tr in found
            if entry.allows(method)
        ]

    def ordered(self) -> list[Route[T]]:
        """Return every route in precedence order, most specific first."""
        return list(self._ordered)

    @staticmethod
    def explain_rank(route: Route[T]) -> str:
        """Say in one line why a route ranks where it does."""
        pattern = parse_pattern(route.pattern)
        tier = host_rank(route.host)[0]
        host = (f"host {route.host}", f"wildcard host {route.host}", "any host")[tier]
        conditions = len(route.conditions)
        kind = ("exact", "parameters, no trailing wildcard", "trailing wildcard")
        kinds = ", ".join(_KIND_NAMES[seg.kind] for seg in pattern.segments) or "root"
        return (
            f"{host} (exact host > wildcard host > any host); {kind[pattern.rule_class]} "
            f"(exact > parameters > trailing wildcard); {pattern.literal_count} literal "
            f"segment(s) (more first); segments: {kinds} (literal > param > {{.+}} > **); "
            f"{conditions} condition(s) (more first)"
        )

    def _tier(self, host: str | None) -> _Tier[T]:
        """Return the tier that holds routes for a configured host (None: every host)."""
        if host is None:
            return self._default
        if host.startswith("*."):
            return self._wildcards.setdefault(host[2:], _Tier())
        return self._hosts.setdefault(host, _Tier())

    def _tiers_for(self, host: str | None) -> tuple[_Tier[T], ...]:
        """Return the tiers to search for a request host, most specific first: the exact host,
        then wildcard hosts from the longest suffix to the shortest, then any host."""
        if not host or not (self._hosts or self._wildcards):
            return (self._default,)
        name = _host_key(host)
        tiers = []
        exact = self._hosts.get(name)
        if exact is not None:
            tiers.append(exact)
        if self._wildcards:
            dot = name.find(".")
            while dot >= 0:
                wildcard = self._wildcards.get(name[dot + 1 :])
                if wildcard is not None:
                    tiers.append(wildcard)
                dot = name.find(".", dot + 1)
        tiers.append(self._default)
        return tuple(tiers)


_KIND_NAMES = {
    SegmentKind.LITERAL: "literal",
    SegmentKind.PARAM: "param",
    SegmentKind.PLUS: "{.+}",
    SegmentKind.STAR: "**",
}


def _split(path: str) -> tuple[list[str], bool]:
    """Split a canonical path into its segments and whether it ends with '/'."""
    if len(path) < 2:  # the root (or, defensively, not a path at all)
        return [], False
    if path[-1] == "/":
        return path[1:-1].split("/"), True
    return path[1:].split("/"), False


def _exact_key(pattern: Pattern) -> str:
    """Return the canonical path an exact pattern matches."""
    joined = "/".join(seg.value for seg in pattern.segments)
    return "/" + joined + ("/" if pattern.trailing_slash and joined else "")


def _host_key(host: str) -> str:
    """Normalize a request host for lookup: lower-case, without port or a final dot."""
    host = host.lower()
    if not host.startswith("["):
        host = host.partition(":")[0]
    elif "]" in host:
        host = host[: host.index("]") + 1]
    # APPSEC: 'example.com.' names the same site; it must not escape the host's routes.
    return host[:-1] if host.endswith(".") else host


def _allowed_methods(entries: list[_Entry[T]]) -> list[str]:
    """Return the sorted union of the methods the entries allow."""
    allowed: set[str] = set()
    for entry in entries:
        allowed |= _STANDARD_METHODS - entry.refused if entry.methods is None else entry.methods
    return sorted(allowed)


def _compile(
    rank: int, route: Route[T], pattern: Pattern, explicit_only: frozenset[str]
) -> _Entry[T]:
    """Build the entry the trie stores for a route."""
    params = tuple(
        (seg.value, i)
        for i, seg in enumerate(pattern.segments)
        if seg.kind is SegmentKind.PARAM and seg.value
    )
    tail = pattern.tail is not None
    tail_at = len(pattern.segments) - 1 if tail else -1
    tail_name = pattern.segments[-1].value if tail else ""
    methods = effective_methods(route)
    return _Entry(rank, route, methods, params, tail_at, tail_name, explicit_only, route.conditions)
