"""Match a request's method, canonical path and host to exactly one configured route.

Precedence: the most specific route wins, whatever the order of the routes in the file.

1. A route with a ``host`` beats a route without one.
2. Then by class: a fully literal (exact) pattern beats a pattern with parameters or ``*`` but
   no trailing wildcard, which beats a pattern ending in a trailing wildcard.
3. Then more literal segments beat fewer.
4. Then the segment kinds are compared left to right, literal > parameter (``{id}``, ``*``) >
   trailing ``{.+}`` > trailing ``**``; the first difference decides.

The method is part of the match: if the most specific routes for a path do not allow the
request's method, a less specific route that allows it wins. ``GET`` implies ``HEAD``. A
route without ``methods`` allows every method except the table's ``explicit_only`` ones
(for the gateway's routes ``TRACE`` and ``CONNECT``), which only a route naming them serves.
The answer is 405 (listing the allowed methods) only when some route matches the path but
none allows the method, and 404 when no route matches the path.

Pattern syntax, matched against canonical paths (see ``gw.core.paths``) segment by segment,
exactly and case-sensitively:

- a literal segment (``orders``, ``v1.2``; percent-encoding in it is decoded once);
- ``{id}`` or ``*``: exactly one non-empty segment (``{id}`` captures it as ``id``);
- last segment only: ``**`` matches zero or more segments (``/api/users/**`` matches
  ``/api/users``, ``/api/users/`` and ``/api/users/42/x``); ``{.+}`` or ``{name:.+}`` one or
  more non-empty segments (``/api/users/{.+}`` matches neither ``/api/users`` nor
  ``/api/users/``); ``rest`` in the match holds what they matched, without the leading ``/``;
- a trailing ``/`` is significant: ``/a/`` matches only ``/a/``. A path ending in ``/`` has an
  empty last segment that only a trailing wildcard or a pattern ending in ``/`` matches.

Pure module: imports only the standard library and other pure gw modules.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from types import MappingProxyType
from typing import Generic, TypeVar

from gw.core.paths import canonicalize_config, encode_path
from gw.errors import ConfigError, InvalidPath, MethodNotAllowed, RouteNotFound

T = TypeVar("T")

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_PARAM = re.compile(rf"\{{({_NAME})\}}")
_TAIL = re.compile(rf"\{{(?:({_NAME}):)?\.\+\}}")
_BRACED = re.compile(r"\{([^{}]*)\}")
_METHOD = re.compile(r"[A-Z][A-Z0-9_-]*")
_HOST = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*|\[[0-9a-f:.]+\]")
_NO_PARAMS: Mapping[str, str] = MappingProxyType({})
# What a 405 lists for a route without ``methods`` (RFC 9110's methods and PATCH).
_STANDARD_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
# APPSEC: TRACE echoes the request back, credentials and cookies included (cross-site
# tracing), and CONNECT asks for a tunnel that gw does not build; a route that leaves out
# ``methods`` means "this API's methods", so it serves neither unless it names them.
EXPLICIT_ONLY_METHODS = frozenset({"TRACE", "CONNECT"})


class SegmentKind(IntEnum):
    """What one pattern segment matches; the numeric order is the precedence order."""

    LITERAL = 0
    PARAM = 1
    PLUS = 2  # trailing {.+}: one or more segments
    STAR = 3  # trailing **: zero or more segments


_TAILS = (SegmentKind.PLUS, SegmentKind.STAR)


@dataclass(frozen=True)
class Segment:
    """One parsed pattern segment: a decoded literal value, or a parameter name ('' if none)."""

    kind: SegmentKind
    value: str = ""


@dataclass(frozen=True)
class Pattern:
    """A parsed route pattern."""

    text: str
    segments: tuple[Segment, ...]
    trailing_slash: bool

    @property
    def tail(self) -> SegmentKind | None:
        """Return the trailing wildcard kind, or None."""
        last = self.segments[-1].kind if self.segments else None
        return last if last in _TAILS else None

    @property
    def rule_class(self) -> int:
        """Return 0 for exact, 1 for parameters without a trailing wildcard, 2 for wildcard."""
        if self.tail is not None:
            return 2
        return 0 if self.literal_count == len(self.segments) else 1

    @property
    def literal_count(self) -> int:
        """Return how many segments are literal."""
        return sum(1 for seg in self.segments if seg.kind is SegmentKind.LITERAL)

    @property
    def normalized(self) -> str:
        """Return the pattern with parameter names erased: equal strings match equal paths."""
        parts = [_NORMAL_FORMS.get(seg.kind) or _literal_form(seg.value) for seg in self.segments]
        return "/" + "/".join(parts) + ("/" if self.trailing_slash and parts else "")


_NORMAL_FORMS = {SegmentKind.PARAM: "*", SegmentKind.PLUS: "{.+}", SegmentKind.STAR: "**"}


def _literal_form(value: str) -> str:
    """Encode a literal for a normalized pattern; a literal '*' must not read as a parameter."""
    return encode_path("/" + value)[1:].replace("*", "%2A")


@dataclass(frozen=True)
class Route(Generic[T]):
    """A configured route: a pattern, optional method and host limits, and a payload."""

    name: str
    pattern: str
    payload: T
    methods: frozenset[str] | None = None
    host: str | None = None


@dataclass(frozen=True)
class RouteMatch(Generic[T]):
    """The route chosen for a request.

    ``params`` maps parameter names to decoded segment values (a named ``{name:.+}`` maps to
    the same text as ``rest``). ``rest`` is what a trailing wildcard matched, without the
    leading ``/`` but with the path's trailing ``/`` (``42/x/``); ``''`` when none.
    """

    route: Route[T]
    params: Mapping[str, str]
    rest: str


def parse_pattern(pattern: str) -> Pattern:
    """Parse a route pattern.

    Raises:
        ValueError: with a readable message saying what is wrong and how to write it.
    """
    if not pattern.startswith("/"):
        raise ValueError(f"pattern {pattern!r} must start with '/'")
    if pattern == "/":
        return Pattern(pattern, (), False)
    body = pattern[1:]
    trailing = body.endswith("/")
    raw_segments = (body[:-1] if trailing else body).split("/")
    if "" in raw_segments:
        raise ValueError(f"pattern {pattern!r} has an empty segment ('//')")
    segments = tuple(_parse_segment(raw) for raw in raw_segments)
    _check_shape(segments, trailing)
    return Pattern(pattern, segments, trailing)


def _parse_segment(raw: str) -> Segment:
    """Parse one raw pattern segment."""
    if raw == "**":
        return Segment(SegmentKind.STAR)
    if raw == "*":
        return Segment(SegmentKind.PARAM)
    if found := _PARAM.fullmatch(raw):
        return Segment(SegmentKind.PARAM, found.group(1))
    if found := _TAIL.fullmatch(raw):
        return Segment(SegmentKind.PLUS, found.group(1) or "")
    if found := _BRACED.fullmatch(raw):
        raise ValueError(_explain_braces(found.group(1)))
    if "{" in raw or "}" in raw or "*" in raw:
        raise ValueError(f"segment {raw!r}: '{{...}}', '*' and '**' must be a whole segment")
    return Segment(SegmentKind.LITERAL, _decode_literal(raw))


def _explain_braces(inner: str) -> str:
    """Say why a braced segment is not a parameter."""
    name, colon, regex = inner.partition(":")
    if colon and regex != ".+":
        return f"'{{{inner}}}': the only regex supported in braces is '.+' ({{{name}:.+}})"
    return (
        f"'{{{inner}}}' is not a parameter: write {{name}} (a letter or '_', then letters, "
        "digits or '_') for one segment, or {.+} / {name:.+} for the rest"
    )


def _decode_literal(raw: str) -> str:
    """Decode a literal pattern segment exactly as a request path segment is decoded."""
    try:
        # The '/_/' anchor turns a dot segment into a visible change instead of an error.
        canonical = canonicalize_config("/_/" + raw)
    except InvalidPath as ex:
        raise ValueError(f"segment {raw!r}: {ex.message}") from None
    if canonical in ("/", "/_/"):
        raise ValueError(f"segment {raw!r}: '.' and '..' segments never reach the router")
    return canonical[3:]


def _check_shape(segments: tuple[Segment, ...], trailing: bool) -> None:
    """Check wildcard placement and parameter names."""
    for seg in segments[:-1]:
        if seg.kind in _TAILS:
            raise ValueError("'**' and '{.+}' may only be the last segment")
    if trailing and segments[-1].kind in _TAILS:
        raise ValueError("a trailing wildcard already matches a trailing '/': remove the '/'")
    names = [seg.value for seg in segments if seg.kind is not SegmentKind.LITERAL and seg.value]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"parameter name {twice[0]!r} is used twice")


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
    static: RouteMatch[T] = field(init=False)

    def __post_init__(self) -> None:
        # PERF: an exact route's match never varies, so it is built once.
        object.__setattr__(self, "static", RouteMatch(self.route, _NO_PARAMS, ""))

    def allows(self, method: str) -> bool:
        """Return whether this route accepts the method."""
        if self.methods is None:
            return method not in self.refused
        return method in self.methods

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

    def best(self, method: str, path: str, seen: list[_Entry[T]]) -> RouteMatch[T] | None:
        """Return the most specific match allowing the method; add path matches to seen."""
        exact = self.exact.get(path)
        if exact is not None:
            for entry in exact:
                if entry.allows(method):
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
            if entry.allows(method) and (winner is None or entry.rank < winner.rank):
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
        parsed, problems = _parse_all(routes)
        problems += _find_duplicates(routes, parsed, explicit_only)
        if problems:
            raise ConfigError(problems)
        patterns = [pattern for pattern in parsed if pattern is not None]  # all parsed here
        order = sorted(range(len(routes)), key=lambda i: _sort_key(routes[i], patterns[i]))
        self._ordered = [routes[i] for i in order]
        self._default: _Tier[T] = _Tier()
        self._hosts: dict[str, _Tier[T]] = {}
        for rank, i in enumerate(order):
            entry = _compile(rank, routes[i], patterns[i], explicit_only)
            self._tier(routes[i].host).add(patterns[i], entry)

    def match(self, method: str, path: str, host: str | None = None) -> RouteMatch[T]:
        """Return the most specific route for a method, canonical path and request host.

        ``host`` is the request's host (any case, a port is ignored); None matches only routes
        without a host.

        Warning:
            ``path`` must come from ``gw.core.paths.canonicalize``: routing a raw or PATH_INFO path
            lets a client choose which route's policies apply.

        Raises:
            MethodNotAllowed: some route matches the path, but none allows the method.
            RouteNotFound: no route matches the path.
        """
        seen: list[_Entry[T]] = []
        for tier in self._tiers_for(host):
            found = tier.best(method, path, seen)
            if found is not None:
                return found
        if seen:
            raise MethodNotAllowed(method, _allowed_methods(seen))
        raise RouteNotFound("no route matches this path")

    def candidates(self, method: str, path: str, host: str | None = None) -> list[RouteMatch[T]]:
        """Return every route matching path, host and method, most specific first."""
        found = [hit for tier in self._tiers_for(host) for hit in tier.all(path)]
        found.sort(key=lambda hit: hit[0].rank)
        return [entry.bind(segs, tr) for entry, segs, tr in found if entry.allows(method)]

    def ordered(self) -> list[Route[T]]:
        """Return every route in precedence order, most specific first."""
        return list(self._ordered)

    @staticmethod
    def explain_rank(route: Route[T]) -> str:
        """Say in one line why a route ranks where it does."""
        pattern = parse_pattern(route.pattern)
        host = f"host {route.host}" if route.host else "any host"
        kind = ("exact", "parameters, no trailing wildcard", "trailing wildcard")
        kinds = ", ".join(_KIND_NAMES[seg.kind] for seg in pattern.segments) or "root"
        return (
            f"{host} (host-specific routes first); {kind[pattern.rule_class]} "
            f"(exact > parameters > trailing wildcard); {pattern.literal_count} literal "
            f"segment(s) (more first); segments: {kinds} (literal > param > {{.+}} > **)"
        )

    def _tier(self, host: str | None) -> _Tier[T]:
        """Return the tier that holds routes for a configured host (None: every host)."""
        if host is None:
            return self._default
        return self._hosts.setdefault(host, _Tier())

    def _tiers_for(self, host: str | None) -> tuple[_Tier[T], ...]:
        """Return the tiers to search for a request host, most specific first."""
        if host and self._hosts:
            tier = self._hosts.get(_host_key(host))
            if tier is not None:
                return (tier, self._default)
        return (self._default,)


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


def _effective_methods(route: Route[T]) -> frozenset[str] | None:
    """Return the route's methods with HEAD added when GET is allowed."""
    if route.methods is None or "GET" not in route.methods:
        return route.methods
    return route.methods | {"HEAD"}


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
    methods = _effective_methods(route)
    return _Entry(rank, route, methods, params, tail_at, tail_name, explicit_only)


def _sort_key(route: Route[T], pattern: Pattern) -> tuple[object, ...]:
    """Return the precedence key; the fields after the kinds only make the order total."""
    methods = sorted(route.methods) if route.methods is not None else ["~"]
    return (
        0 if route.host else 1,
        pattern.rule_class,
        -pattern.literal_count,
        tuple(seg.kind for seg in pattern.segments),
        pattern.normalized,
        route.host or "",
        methods,
        route.name,
    )


def _parse_all(routes: Sequence[Route[T]]) -> tuple[list[Pattern | None], list[str]]:
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


def _find_duplicates(
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
                if overlap is not None:
                    problems.append(_duplicate_message(i, j, routes, overlap))
    return problems


def _overlap(first: Route[T], second: Route[T], explicit_only: frozenset[str]) -> str | None:
    """Return the methods two routes share, as text, or None when they share none."""
    a, b = _effective_methods(first), _effective_methods(second)
    if a is None and b is None:
        return "(any method)"
    shared = frozenset.intersection(*(methods for methods in (a, b) if methods is not None))
    if a is None or b is None:
        shared -= explicit_only  # a route without methods does not serve these
    return ",".join(sorted(shared)) or None


def _duplicate_message(i: int, j: int, routes: Sequence[Route[T]], methods: str) -> str:
    """Describe two routes that match the same requests."""
    where = f" on host {routes[i].host}" if routes[i].host else ""
    return (
        f"routes[{i}] and routes[{j}] match exactly the same requests: "
        f"{methods} {routes[i].pattern}{where} (routes {routes[i].name!r} and {routes[j].name!r})"
    )
