"""Parse route patterns: the syntax of routes, auth exclusions and transformations.

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

A ``SegmentKind``'s numeric order is the precedence order of segments, and a ``Pattern`` says
its rule class, literal count and normalized form: what ``gw.core.routes`` ranks routes by.

Pure module: imports only the standard library and other pure gw modules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum

from gw.core.paths import canonicalize_config, encode_path
from gw.errors import InvalidPath

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_PARAM = re.compile(rf"\{{({_NAME})\}}")
_TAIL = re.compile(rf"\{{(?:({_NAME}):)?\.\+\}}")
_BRACED = re.compile(r"\{([^{}]*)\}")


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
