"""Configuration models for aggregate routes, transformations and compression.

The lead's schema includes them: ``AggregateSettings`` on a route (``aggregate:``, instead of
``upstream``), a list of ``TransformationSettings`` (``transformations:``, seed 003's block
unchanged), ``CompressionSettings`` (``compression:``, seed 002's ``enabled``/``threshold``/
``level``) and ``AggregatorSettings`` (the per-worker thread pool). Syntax errors in templates,
field paths and header rules are reported here, at their exact location.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Self

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from gw.core.headers import GATEWAY_OWNED, HOP_BY_HOP
from gw.core.patterns import parse_pattern
from gw.shaping.templates import MISSING_FIELD, parse_template
from gw.shaping.transform import check_rename, parse_field_path

_STRICT = ConfigDict(extra="forbid", frozen=True)
MIB = 1024 * 1024
Seconds = Annotated[float, Field(gt=0, le=3600)]

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
# Headers that the gateway computes itself: a rule that set or removed them would break framing.
_FRAMING = frozenset({"content-length", "content-encoding", "transfer-encoding"})
_REQUEST_FORBIDDEN = HOP_BY_HOP | GATEWAY_OWNED | _FRAMING
_RESPONSE_FORBIDDEN = HOP_BY_HOP | _FRAMING

DEFAULT_COMPRESSIBLE = (
    "text/*",
    "application/json",
    "application/*+json",
    "application/javascript",
    "application/x-javascript",
    "application/ecmascript",
    "application/xml",
    "application/*+xml",
    "application/x-ndjson",
    "application/graphql",
    "application/x-www-form-urlencoded",
    "application/wasm",
    "application/vnd.ms-fontobject",
    "application/x-font-ttf",
    "font/ttf",
    "font/otf",
    "image/svg+xml",
    "image/x-icon",
    "image/vnd.microsoft.icon",
    "image/bmp",
)


class AggregatePartSettings(BaseModel):
    """One part of an aggregate route."""

    model_config = _STRICT

    key: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$",
        description="Top-level key of the merged document that holds this part's JSON.",
    )
    upstream: str = Field(description="A configured upstream name.")
    path: str = Field(
        description="Origin-form path template: {params.NAME}, {query.NAME}, {identity.sub}, "
        "{identity.role}, {identity.claims.NAME}; {field:-default} gives a default."
    )
    required: bool = Field(
        default=True,
        description="A failed required part fails the route (502/504); a failed optional "
        "part becomes null and is listed in _missing.",
    )
    timeout: Seconds | None = Field(
        default=None, description="This part's seconds; capped by the aggregate's timeout."
    )

    @field_validator("key")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value == MISSING_FIELD:
            raise ValueError(f"{MISSING_FIELD!r} is reserved for the list of missing parts")
        return value

    @field_validator("path")
    @classmethod
    def _template(cls, value: str) -> str:
        parse_template(value)
        return value


class AggregateSettings(BaseModel):
    """A route that fans out to several upstreams and merges their JSON (``aggregate:``)."""

    model_config = _STRICT

    parts: list[AggregatePartSettings] = Field(min_length=1, max_length=64)
    timeout: Seconds = Field(default=5.0, description="The whole aggregate's deadline.")
    max_part_bytes: int = Field(
        default=MIB, ge=1, le=64 * MIB, description="A larger part answer is a part failure."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        keys = [part.key for part in self.parts]
        twice = sorted({key for key in keys if keys.count(key) > 1})
        if twice:
            raise ValueError(f"parts: key {twice[0]!r} is used twice")
        for i, part in enumerate(self.parts):
            if part.timeout is not None and part.timeout > self.timeout:
                raise ValueError(
                    f"parts[{i}].timeout: {part.timeout} s is longer than the aggregate's "
                    f"timeout of {self.timeout} s"
                )
        return self


class AggregatorSettings(BaseModel):
    """The thread pool that runs aggregate parts, one per worker process."""

    model_config = _STRICT

    threads: int = Field(default=16, ge=1, le=256, description="Parts in flight per worker.")


def _check_headers(names: list[str], forbidden: frozenset[str]) -> None:
    for name in names:
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"{name!r} is not a valid header name")
        if name.lower() in forbidden:
            raise ValueError(f"header {name!r} is managed by the gateway and cannot be changed")


def _check_values(headers: dict[str, str]) -> None:
    for name, value in headers.items():
        # APPSEC: CR/LF in a value would let the config smuggle a header or split a response.
        if not _VALUE.fullmatch(value):
            raise ValueError(f"header {name!r}: the value has a control or non-Latin-1 character")


class RequestRules(BaseModel):
    """Header changes on the way to the upstream."""

    model_config = _STRICT

    add_headers: dict[str, str] = Field(default={}, description="Set (replacing any copy).")
    remove_headers: list[str] = []

    @model_validator(mode="after")
    def _headers(self) -> Self:
        _check_headers([*self.add_headers, *self.remove_headers], _REQUEST_FORBIDDEN)
        _check_values(self.add_headers)
        return self


class ResponseRules(BaseModel):
    """Changes on the way back: JSON fields (seed 003) and headers."""

    model_config = _STRICT

    remove_fields: list[str] = Field(
        default=[], description="Field paths: name, a.b, items[].id, [].id for a top-level array."
    )
    rename_fields: dict[str, str] = Field(
        default={}, description="Field path -> new name in the same object; replaces a key."
    )
    add_headers: dict[str, str] = Field(default={}, description="Set (replacing any copy).")
    remove_headers: list[str] = []

    @field_validator("remove_fields")
    @classmethod
    def _fields(cls, value: list[str]) -> list[str]:
        for path in value:
            parse_field_path(path)
        return value

    @field_validator("rename_fields")
    @classmethod
    def _renames(cls, value: dict[str, str]) -> dict[str, str]:
        for source, target in value.items():
            check_rename(source, target)
        return value

    @model_validator(mode="after")
    def _headers(self) -> Self:
        _check_headers([*self.add_headers, *self.remove_headers], _RESPONSE_FORBIDDEN)
        _check_values(self.add_headers)
        return self


class TransformationSettings(BaseModel):
    """One ``transformations:`` entry: rules for the requests a path pattern matches."""

    model_config = _STRICT

    path: str = Field(description="A route pattern (gw.core.patterns syntax), e.g. /api/users/**.")
    request: RequestRules | None = None
    response: ResponseRules | None = None
    max_body_bytes: int = Field(
        default=MIB,
        ge=0,
        le=64 * MIB,
        description="Larger (or unknown-length) JSON bodies pass through untransformed.",
    )

    @field_validator("path")
    @classmethod
    def _pattern(cls, value: str) -> str:
        parse_pattern(value)
        return value


def _threshold_in_schema(schema: dict[str, Any]) -> None:
    """Name seed 002's ``threshold`` in the JSON schema too (an alias of ``min_bytes``)."""
    properties = schema["properties"]
    alias = dict(properties["min_bytes"], description="seed 002's name for min_bytes.")
    properties["threshold"] = alias


class CompressionSettings(BaseModel):
    """gzip for clients that accept it (``compression:``; seed 002's keys are accepted)."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_threshold_in_schema)

    enabled: bool = True
    min_bytes: int = Field(
        default=1024,
        ge=0,
        validation_alias=AliasChoices("min_bytes", "threshold"),
        description="Smaller bodies are sent as they are (seed 002 calls it 'threshold').",
    )
    level: int = Field(default=6, ge=1, le=9)
    types: list[str] = Field(
        default=list(DEFAULT_COMPRESSIBLE),
        description="Media types to compress: exact, 'type/*' or 'type/*+suffix'.",
    )
    buffer_bytes: int = Field(
        default=MIB,
        ge=0,
        le=64 * MIB,
        description="Bodies of known length up to this are compressed whole, with a "
        "Content-Length; larger ones are streamed without one.",
    )

    @field_validator("types")
    @classmethod
    def _media_types(cls, value: list[str]) -> list[str]:
        for media in value:
            if not re.fullmatch(r"[a-z0-9.+-]+/(\*|\*\+[a-z0-9.-]+|[a-z0-9.+-]+)", media):
                raise ValueError(f"{media!r} is not a lower-case media type pattern")
        return value
