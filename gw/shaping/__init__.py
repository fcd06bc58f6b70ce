"""Composition and shaping: aggregate routes, response transformations, gzip compression.

- ``gw.shaping.compose``: ``Aggregator`` fans one request out to several upstreams in parallel
  and merges their JSON answers, in configuration order, into one document; its part path
  templates are ``gw.shaping.templates``, one part's request ``gw.shaping.parts``.
- ``gw.shaping.transform``: ``Transformer`` removes and renames JSON fields and adds or removes
  headers, for the routes a path pattern selects.
- ``gw.shaping.compress``: ``Compressor`` gzips responses for clients that accept it.
- ``gw.shaping.settings``: the pydantic models for the configuration schema.

The JSON helpers below are the one reading and writing rule both compose and transform follow:
strict standard JSON in (no ``NaN``/``Infinity``, no number that overflows a double), compact
UTF-8 out. Standard library only.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["dump_json", "load_json"]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not standard JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} does not fit a double")
    return value


def load_json(data: bytes) -> Any:
    """Parse standard JSON (UTF-8/16/32).

    Raises:
        ValueError: not JSON, or a value that could not be written back as standard JSON.
    """
    try:
        return json.loads(data, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def dump_json(value: Any) -> bytes:
    """Serialize compactly as UTF-8 (non-ASCII text stays as is)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        return text.encode()
    except UnicodeEncodeError:
        # A lone surrogate ("\ud800" in the input) has no UTF-8 form: keep it escaped.
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
