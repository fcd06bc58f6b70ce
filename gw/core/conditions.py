"""Route conditions on headers, query parameters and cookies, and the request view they read.

A route's ``match:`` holds conditions; the route serves a request only when every one holds.
Each condition names one header, query parameter or cookie and asks for one of:

- ``equals``: the value is one of ``values`` (one value: an exact match);
- ``prefix``: the value starts with ``values[0]``;
- ``present`` / ``absent``: the name occurs at least once / not at all.

No regular expressions: a pattern written by an operator and run on every request is one
catastrophic backtrack away from an outage; these four kinds are linear and enough to
choose a route.

Header names are case-insensitive; query and cookie names, and every value, are
case-sensitive. Pure module: imports only the standard library and other pure gw modules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote_plus

from gw.core.headers import Headers, forwardable

SOURCES = ("header", "query", "cookie")
KINDS = ("equals", "prefix", "present", "absent")


@dataclass(frozen=True, order=True)
class Condition:
    """One test on one header, query parameter or cookie (see the module docstring)."""

    source: str  # one of SOURCES
    name: str  # a header's lower-case; a query parameter's or cookie's as written
    kind: str  # one of KINDS
    values: tuple[str, ...] = ()  # equals: the accepted values; prefix: the one prefix

    def holds(self, view: RequestView) -> bool:
        """Return whether the request satisfies this condition."""
        found = view.values(self.source, self.name)
        if self.kind == "present":
            return bool(found)
        if self.kind == "absent":
            return not found
        # APPSEC: a query parameter or cookie sent more than once satisfies no value test:
        # upstreams differ on which copy they read (first, last, all), so a client could
        # otherwise pass gw's test with one copy and be served by the upstream on the other.
        if len(found) != 1:
            return False
        value = found[0]
        if self.kind == "prefix":
            return value.startswith(self.values[0])
        return value in self.values

    def describe(self) -> str:
        """Say what the condition asks, e.g. ``header x-canary = '1'``."""
        shown = ", ".join(repr(v) for v in self.values)
        test = {
            "equals": f"= {shown}" if len(self.values) == 1 else f"in ({shown})",
            "prefix": f"starts with {shown}",
            "present": "present",
            "absent": "absent",
        }[self.kind]
        return f"{self.source} {self.name} {test}"


def compatible(first: Sequence[Condition], second: Sequence[Condition]) -> bool:
    """Return whether some request can satisfy both sets of conditions at once (each set
    names a header, parameter or cookie at most once)."""
    return all(
        _pair_compatible(a, b)
        for a in first
        for b in second
        if (a.source, a.name) == (b.source, b.name)
    )


def _pair_compatible(a: Condition, b: Condition) -> bool:
    """Whether one value (or absence) can satisfy two conditions on the same name."""
    if "absent" in (a.kind, b.kind):
        return a.kind == b.kind
    if "present" in (a.kind, b.kind):
        return True
    if a.kind == b.kind == "prefix":
        return a.values[0].startswith(b.values[0]) or b.values[0].startswith(a.values[0])
    if a.kind == "prefix":
        a, b = b, a
    if b.kind == "prefix":
        return any(value.startswith(b.values[0]) for value in a.values)
    return bool(set(a.values) & set(b.values))


class RequestView:
    """What conditions read of one request: the headers gw forwards, the query parameters and
    the cookies, each parsed on first use only.

    ``headers`` are the client's fields as the server gives them (repeated fields joined by
    ``,``); ``owned`` the canonical names of the headers gw sets itself.
    """

    __slots__ = ("_cookies", "_forwarded", "_headers", "_owned", "_params", "_query")

    def __init__(self, headers: Headers, query: str, owned: frozenset[str]) -> None:
        self._headers = headers
        self._query = query
        self._owned = owned
        self._forwarded: dict[str, str] | None = None
        self._params: dict[str, list[str]] | None = None
        self._cookies: dict[str, list[str]] | None = None

    def values(self, source: str, name: str) -> list[str]:
        """Return every value the request gives ``name`` in ``source`` (empty: absent)."""
        if source == "header":
            value = self._header_fields().get(name)
            return [] if value is None else [value]
        if source == "query":
            if self._params is None:
                self._params = parse_query(self._query)
            return self._params.get(name, [])
        if self._cookies is None:
            self._cookies = parse_cookies(self._header_fields().get("cookie", ""))
        return self._cookies.get(name, [])

    def _header_fields(self) -> dict[str, str]:
        # APPSEC: conditions see only what the upstream receives: no gateway-owned header
        # (a client's X-User-Id is dropped, so it can choose no route), no hop-by-hop one and
        # none the client's Connection names. A repeated header arrives joined by ',' and is
        # tested as that one joined value, which is exactly what the upstream receives.
        if self._forwarded is None:
            kept = forwardable(self._headers, self._owned)
            self._forwarded = {name.lower(): value for name, value in kept}
        return self._forwarded


EMPTY_VIEW = RequestView(Headers([]), "", frozenset())


def parse_query(query: str) -> dict[str, list[str]]:
    """Split a raw query into decoded ``name -> [values]`` (``+`` is a space, as in forms).

    APPSEC: names are decoded too, so ``vers%69on=2`` is a second ``version``, as the upstream
    reads it, and makes the parameter repeated rather than hidden from a condition.
    """
    params: dict[str, list[str]] = {}
    for part in query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        decoded = unquote_plus(name, errors="surrogateescape")
        params.setdefault(decoded, []).append(unquote_plus(value, errors="surrogateescape"))
    return params


def parse_cookies(header: str) -> dict[str, list[str]]:
    """Split a Cookie header into ``name -> [values]`` (no decoding, as RFC 6265 says).

    APPSEC: a value with ',' (not a legal cookie octet; what two Cookie fields joined by the
    server look like) is kept twice, so it counts as repeated and satisfies no value test.
    """
    cookies: dict[str, list[str]] = {}
    for part in header.split(";"):
        name, sep, value = part.strip(" \t").partition("=")
        if not sep or not name:
            continue
        values = cookies.setdefault(name, [])
        values.append(value)
        if "," in value:
            values.append(value)
    return cookies
