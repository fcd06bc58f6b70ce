"""Compile ``transformations:`` and a route's ``aggregate:`` block.

Runs at start-up (and in ``gw check``); problems are added to the caller's list.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from gw.errors import ConfigError
from gw.shaping.compose import AggregateSpec, compile_aggregate
from gw.shaping.settings import AggregateSettings, TransformationSettings
from gw.shaping.transform import Transformer


def compile_transformer(
    settings: Sequence[TransformationSettings], problems: list[str]
) -> Transformer | None:
    """Build the response transformer; None when there are no transformations."""
    if not settings:
        return None
    try:
        return Transformer.compile(settings)
    except ConfigError as ex:
        problems.extend(ex.problems)
        return None


def compile_route_aggregate(
    settings: AggregateSettings | None,
    upstreams: Collection[str],
    route_path: str,
    where: str,
    problems: list[str],
) -> AggregateSpec | None:
    """Compile a route's ``aggregate:`` (at ``where``, ``routes[3]``); None without one."""
    if settings is None:
        return None
    try:
        return compile_aggregate(settings, upstreams, route_path, f"{where}.aggregate")
    except ConfigError as ex:
        problems.extend(ex.problems)
        return None
