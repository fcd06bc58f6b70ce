"""A route's ``match:`` block: conditions on headers, query parameters and cookies.

::

    match:
      headers: {X-Canary: "1"}            # exact value
      query: {version: [v1, v2]}          # one of
      cookies: {beta: {present: true}}    # present (false: absent); {prefix: "abc"}

Compiled here into ``gw.core.conditions.Condition`` tuples; the route table ranks and
evaluates them (``gw.core.routing``).
"""

from __future__ import annotations

import re
from typing import Annotated, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from gw.core.conditions import Condition
from gw.core.headers import GATEWAY_OWNED, HOP_BY_HOP, canonical_name

_STRICT = ConfigDict(extra="forbid", frozen=True)
_TOKEN = re.compile(r"[!#$%&'*+.^`|~0-9A-Za-z-]+")  # RFC 9110 token, without '_' (see below)
_NEVER_SEEN = HOP_BY_HOP | {"content-length", "host"}


class ValueTest(BaseModel):
    """``{present: true}``, ``{present: false}`` (absent) or ``{prefix: "abc"}``."""

    model_config = _STRICT

    present: bool | None = None
    prefix: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_test(self) -> Self:
        if (self.present is None) == (self.prefix is None):
            raise ValueError("give exactly one of 'present' or 'prefix'")
        return self


def _shape(value: object) -> str:
    """Which form a test is written in: a value, a list of values, or a mapping."""
    return "values" if isinstance(value, list) else "test" if isinstance(value, dict) else "value"


# A tagged union reports only the form that was written.
MatchValue = Annotated[
    Annotated[str, Tag("value")]
    | Annotated[list[str], Field(min_length=1), Tag("values")]
    | Annotated[ValueTest, Tag("test")],
    Discriminator(_shape),
]


class MatchSettings(BaseModel):
    """Conditions that must all hold for the route to serve a request (no regular expressions)."""

    model_config = _STRICT

    headers: dict[str, MatchValue] = Field(
        default_factory=dict,
        description="Header name (any case) -> value, [values], {present: bool} or {prefix}.",
    )
    query: dict[str, MatchValue] = Field(
        default_factory=dict, description="Query parameter (decoded, case-sensitive) -> test."
    )
    cookies: dict[str, MatchValue] = Field(
        default_factory=dict, description="Cookie name (case-sensitive) -> test."
    )

    @field_validator("headers", "query", "cookies", mode="before")
    @classmethod
    def _numbers_as_text(cls, value: object) -> object:
        """``X-Canary: 1`` means the text "1" (YAML reads it as a number)."""
        if not isinstance(value, dict):
            return value
        return {k: _text(v) for k, v in value.items()}


def _text(value: object) -> object:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list):
        return [_text(v) for v in value]
    return value


def compile_conditions(
    where: str, settings: MatchSettings | None, problems: list[str]
) -> tuple[Condition, ...]:
    """Return the route's conditions; add every problem, located, to ``problems``."""
    if settings is None:
        return ()
    conditions: list[Condition] = []
    seen: dict[str, str] = {}
    for name, value in settings.headers.items():
        at = f"{where}.match.headers.{name}"
        lower = name.lower()
        problem = _header_problem(name)
        if lower in seen:
            problem = f"the same header as {seen[lower]} (header names ignore case)"
        if problem:
            problems.append(f"{at}: {problem}")
            continue
        seen[lower] = name
        conditions.append(_condition("header", lower, value))
    for source, tests in (("query", settings.query), ("cookie", settings.cookies)):
        for name, value in tests.items():
            if not name:
                problems.append(f"{where}.match.{source}: an empty name matches nothing")
                continue
            conditions.append(_condition(source, name, value))
    return tuple(sorted(conditions))


def _header_problem(name: str) -> str | None:
    """Why a header could never reach a condition, or None."""
    if not _TOKEN.fullmatch(name):
        # Names with '_' are dropped by the server (gw.edge.environ), as gunicorn does.
        return "not a header name gw passes on (letters, digits and '-'; no '_')"
    canonical = canonical_name(name)
    if canonical in GATEWAY_OWNED or canonical in _NEVER_SEEN:
        return (
            "gw drops the client's copy of this header (it is hop-by-hop, framing or set by "
            "gw itself), so no condition can see it"
        )
    return None


def _condition(source: str, name: str, value: str | list[str] | ValueTest) -> Condition:
    if isinstance(value, str):
        return Condition(source, name, "equals", (value,))
    if isinstance(value, list):
        return Condition(source, name, "equals", tuple(dict.fromkeys(value)))
    if value.prefix is not None:
        return Condition(source, name, "prefix", (value.prefix,))
    return Condition(source, name, "present" if value.present else "absent")
