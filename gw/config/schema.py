"""The JSON Schema of the config file, generated from the models that validate it.

``gw schema`` prints it for editors. It describes what ``gw check`` accepts: the shorthand
forms the models read (``auth: optional``, sizes such as ``64 MiB``, a target as a plain URL,
seed 002's ``threshold``) are part of each field's input type, and a number or a boolean may
be written as a string, since pydantic reads ``"5"`` as 5 and a ``${VAR}`` reference always
becomes a string. Checks that need code (CIDR syntax, route patterns, upstream names...) are
left to ``gw check``: the schema never refuses a valid file, but may accept an invalid one.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from gw.config.settings import GatewaySettings

DIALECT = "https://json-schema.org/draft/2020-12/schema"
# A ${VAR} reference, which gw substitutes before validating (the file as an editor sees it).
_REFERENCE = r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}"
_INTEGER_TEXT = rf"^\s*[-+]?[0-9][0-9_]*(\.0*)?\s*$|{_REFERENCE}"
_NUMBER_TEXT = rf"^\s*[-+]?([0-9][0-9_]*(\.[0-9_]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$|{_REFERENCE}"
# pydantic's lax booleans; JSON Schema patterns have no flags, so the usual cases are listed.
_BOOLEAN_WORDS = ("true", "false", "yes", "no", "on", "off", "t", "f", "y", "n", "1", "0")
_BOOLEAN_TEXT = sorted({form(w) for w in _BOOLEAN_WORDS for form in (str.lower, str.upper)})


class _InputSchema(GenerateJsonSchema):
    """Describe the input the models accept, not only their canonical output."""

    def int_schema(self, schema: core_schema.IntSchema) -> JsonSchemaValue:
        return _or_text(super().int_schema(schema), {"type": "string", "pattern": _INTEGER_TEXT})

    def float_schema(self, schema: core_schema.FloatSchema) -> JsonSchemaValue:
        return _or_text(super().float_schema(schema), {"type": "string", "pattern": _NUMBER_TEXT})

    def bool_schema(self, schema: core_schema.BoolSchema) -> JsonSchemaValue:
        words = [*_BOOLEAN_TEXT, *(w.title() for w in _BOOLEAN_WORDS if w.isalpha()), 0, 1]
        reference = {"type": "string", "pattern": _REFERENCE}
        return _or_text(super().bool_schema(schema), {"enum": words}, reference)


def _or_text(native: JsonSchemaValue, *text: JsonSchemaValue) -> JsonSchemaValue:
    return {"anyOf": [native, *text]}


def config_schema() -> dict[str, Any]:
    """Return the JSON Schema (draft 2020-12) of the config file."""
    schema = GatewaySettings.model_json_schema(mode="validation", schema_generator=_InputSchema)
    schema["$schema"] = DIALECT
    schema["title"] = "gw configuration"
    schema["description"] = (
        "The gw config file (YAML or JSON). ${VAR} and ${VAR:-default} are substituted "
        "before validation; `gw check` also checks what a schema cannot (names, patterns)."
    )
    return schema
