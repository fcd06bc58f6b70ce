"""The shaping config models: the documented examples load, mistakes are refused with reasons."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from gw.shaping.settings import (
    AggregateSettings,
    AggregatorSettings,
    CompressionSettings,
    TransformationSettings,
)

ISSUE_EXAMPLE = """
aggregate:
  parts:
    - key: user
      upstream: users
      path: /users/{identity.sub}
      required: true
    - key: recent_orders
      upstream: orders
      path: /orders?user={identity.sub}&limit={query.limit:-3}
      timeout: 2.0
    - key: recommendations
      upstream: products
      path: /recommendations/{identity.sub}
      required: false
  timeout: 5.0
"""


def test_issue_example_loads_with_documented_defaults() -> None:
    settings = AggregateSettings.model_validate(yaml.safe_load(ISSUE_EXAMPLE)["aggregate"])
    assert [p.key for p in settings.parts] == ["user", "recent_orders", "recommendations"]
    assert [p.required for p in settings.parts] == [True, True, False]  # required by default
    assert settings.max_part_bytes == 1024 * 1024
    assert AggregatorSettings().threads == 16


def refusal(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        AggregateSettings.model_validate(data)
    return str(info.value)


def test_aggregate_mistakes_are_refused_with_reasons() -> None:
    one = {"key": "a", "upstream": "u", "path": "/a"}
    assert "at least 1 item" in refusal({"parts": []})
    assert "key 'a' is used twice" in refusal({"parts": [one, one]})
    assert "reserved" in refusal({"parts": [{**one, "key": "_missing"}]})
    assert "unknown field '{identity.email}'" in refusal(
        {"parts": [{**one, "path": "/a/{identity.email}"}]}
    )
    assert "longer than the aggregate's timeout" in refusal(
        {"parts": [{**one, "timeout": 9}], "timeout": 2}
    )
    assert "Extra inputs are not permitted" in refusal({"parts": [{**one, "method": "POST"}]})


def test_models_are_frozen() -> None:
    settings = CompressionSettings()
    with pytest.raises(ValidationError):
        settings.level = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "model", [AggregateSettings, AggregatorSettings, CompressionSettings, TransformationSettings]
)
def test_every_model_has_a_json_schema(model: type[BaseModel]) -> None:
    schema = model.model_json_schema()
    assert schema["additionalProperties"] is False


def test_compression_types_must_be_media_type_patterns() -> None:
    with pytest.raises(ValidationError, match="not a lower-case media type pattern"):
        CompressionSettings(types=["Text/HTML"])
