"""Part path templates of aggregate routes: parsed once at start-up, filled from each request.

Templates (``/orders?user={identity.sub}&limit={query.limit:-3}``): fields are
``{params.NAME}`` (route path parameters), ``{query.NAME}`` (first value of a client query
parameter), ``{identity.sub}``, ``{identity.role}`` and ``{identity.claims.NAME}``. ``:-`` gives
a default used when the value is absent or empty (as in the shell); without a default, an absent
or empty value is ``400 missing_parameter`` before any upstream is called. Values are
percent-encoded for their place, so a value can never add a path segment, a ``?`` or a ``&``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote

from gw.core.identity import Identity
from gw.core.paths import canonicalize, encode_path
from gw.errors import ClientError, InvalidPath

# The merged document's list of failed optional parts: no part key may be this name.
MISSING_FIELD = "_missing"
KNOWN_FIELDS = "params.NAME, query.NAME, identity.sub, identity.role, identity.claims.NAME"

_BRACES = re.compile(r"\{([^{}]*)\}")
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_QUERY_TEXT = re.compile(r"[\x21-\x7e]*")  # printable ASCII without space
_QUERY_SAFE = "-._~"


class MissingParameter(ClientError):
    """A template needs a value the request does not have (400)."""

    code = "missing_parameter"


class InvalidParameter(ClientError):
    """A value cannot be placed in a part's path safely (400)."""

    code = "invalid_parameter"


# -- templates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One ``{...}`` piece of a template."""

    text: str  # as written, braces included
    source: str  # "params", "query", "sub", "role" or "claim"
    name: str  # parameter, query or claim name ('' for sub and role)
    default: str | None
    in_query: bool


@dataclass(frozen=True)
class Template:
    """A part's path template, parsed into literal text and fields."""

    text: str
    pieces: tuple[str | Field, ...]

    @property
    def fields(self) -> tuple[Field, ...]:
        """Return the fields in the order written."""
        return tuple(piece for piece in self.pieces if isinstance(piece, Field))

    def render(self, values: RequestValues) -> str:
        """Return the origin-form path with every field filled in and encoded.

        Raises:
            MissingParameter: a field has no value and no default.
            InvalidParameter: a value cannot be placed in a path segment unambiguously.
        """
        return "".join(
            piece if isinstance(piece, str) else _encode(piece, values.lookup(piece))
            for piece in self.pieces
        )


def parse_template(text: str) -> Template:
    """Parse a part path template.

    Raises:
        ValueError: with a readable message (unknown field, bad literal text, bad default).
    """
    if not text.startswith("/") or text.startswith("//"):
        raise ValueError(f"path {text!r} must start with a single '/'")
    path, question, query = text.partition("?")
    pieces = _parse_place(path, in_query=False)
    if question:
        pieces += ["?", *_parse_place(query, in_query=True)]
    return Template(text, tuple(pieces))


def _parse_place(text: str, in_query: bool) -> list[str | Field]:
    """Split the path or the query part of a template into literals and fields."""
    pieces: list[str | Field] = []
    at = 0
    for found in _BRACES.finditer(text):
        pieces.append(text[at : found.start()])
        pieces.append(_parse_field(found.group(0), found.group(1), in_query))
        at = found.end()
    pieces.append(text[at:])
    _check_literals(pieces, in_query)
    return [piece for piece in pieces if piece != ""]


def _parse_field(text: str, inner: str, in_query: bool) -> Field:
    """Parse the inside of one ``{...}``."""
    name, colon, default = inner.partition(":-")
    source, _, rest = name.partition(".")
    field = _field_kind(source, rest)
    if field is None:
        raise ValueError(f"unknown field {text!r} (known: {KNOWN_FIELDS})")
    kind, key = field
    result = Field(text, kind, key, default if colon else None, in_query)
    if result.default and not in_query:
        _check_path_value(result.default, result)
    return result


def _field_kind(source: str, rest: str) -> tuple[str, str] | None:
    """Return (source, name) for a valid field name, or None."""
    if source == "params" and _PARAM_NAME.fullmatch(rest):
        return "params", rest
    if source == "query" and rest and _QUERY_TEXT.fullmatch(rest):
        return "query", rest
    if source == "identity" and rest in ("sub", "role"):
        return rest, ""
    if source == "identity" and rest.startswith("claims.") and len(rest) > len("claims."):
        return "claim", rest[len("claims.") :]
    return None


def _check_literals(pieces: list[str | Field], in_query: bool) -> None:
    """Refuse literal text that is not a legal request target."""
    literals = [piece for piece in pieces if isinstance(piece, str)]
    for literal in literals:
        if "{" in literal or "}" in literal:
            raise ValueError(f"unbalanced brace in {literal!r}; fields are written {{source.name}}")
        if in_query and not (_QUERY_TEXT.fullmatch(literal) and "#" not in literal):
            raise ValueError(f"query text {literal!r} must be printable ASCII without '#'")
    if not in_query:
        # Each field stands in for one plain character: the literal frame must be canonical.
        frame = "".join(piece if isinstance(piece, str) else "x" for piece in pieces)
        try:
            canonical = canonicalize(frame)
        except InvalidPath as ex:
            raise ValueError(f"path: {ex.message}") from None
        if encode_path(canonical) != frame:
            raise ValueError(
                f"path is not in canonical form; write it as {encode_path(canonical)!r}"
            )


# -- request values ---------------------------------------------------------------------------


class RequestValues:
    """What templates can draw on, for one request."""

    def __init__(self, params: Mapping[str, str], query: str, identity: Identity | None) -> None:
        self.params = params
        self.raw_query = query
        self.identity = identity
        self._query: dict[str, str] | None = None

    def lookup(self, field: Field) -> str:
        """Return the field's value, or its default when absent or empty.

        Raises:
            MissingParameter: absent or empty, and no default.
        """
        value = self._raw(field)
        if value:
            return value
        if field.default is not None:
            return field.default
        raise MissingParameter(_missing_message(field), extra={"parameter": field.text[1:-1]})

    def _raw(self, field: Field) -> str | None:
        if field.source == "params":
            return self.params.get(field.name)
        if field.source == "query":
            return self._parsed_query().get(field.name)
        if self.identity is None:
            return None
        if field.source == "sub":
            return self.identity.subject
        if field.source == "role":
            return self.identity.role
        return _claim_text(field.name, self.identity.claims.get(field.name))

    def _parsed_query(self) -> dict[str, str]:
        if self._query is None:
            try:
                pairs = parse_qsl(self.raw_query, keep_blank_values=True, errors="strict")
            except UnicodeDecodeError:
                raise InvalidParameter("the query string is not valid UTF-8") from None
            self._query = {}
            for name, value in pairs:
                self._query.setdefault(name, value)  # the first value wins
        return self._query


def _claim_text(name: str, value: Any) -> str | None:
    """Return a claim as text; only single values can go into a path."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    raise InvalidParameter(f"claim {name!r} is not a single value and cannot go into a path")


def _missing_message(field: Field) -> str:
    if field.source == "query":
        return f"this request needs the query parameter {field.name!r}"
    if field.source == "params":
        return f"this request needs the path parameter {field.name!r}"
    what = {"sub": "a subject", "role": "a role", "claim": f"the claim {field.name!r}"}
    return f"this request needs a verified identity with {what[field.source]}"


def _encode(field: Field, value: str) -> str:
    """Percent-encode a value for its place in the request target."""
    try:
        if field.in_query:
            # APPSEC: only unreserved characters stay as they are, so '&', '=', '#', '+' and
            # '%' in a value can never start another parameter or change how it decodes.
            return quote(value, safe=_QUERY_SAFE)
        return _check_path_value(value, field)
    except UnicodeEncodeError:  # a claim may hold a lone surrogate
        raise InvalidParameter(f"the value of {field.text} is not valid Unicode text") from None


def _check_path_value(value: str, field: Field) -> str:
    """Encode a value for a path segment, refusing what readers could split or climb with."""
    encoded = quote(value, safe=_QUERY_SAFE)
    # APPSEC: percent-encoding alone is not enough for a path: upstreams that decode before
    # splitting read %2F as '/', and '.'/'..' climb. The gateway's own canonicalizer decides:
    # the value must decode to exactly one plain segment.
    try:
        ok = canonicalize("/" + encoded) == "/" + value
    except InvalidPath:
        ok = False
    if not ok:
        raise InvalidParameter(
            f"the value of {field.text} cannot be used as a path segment "
            "(it contains '/', '\\', '?', '#', ';', a control character or is '.' or '..')"
        )
    return encoded
