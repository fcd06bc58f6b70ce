"""Read the configuration file: YAML (duplicate keys refused), ``${VAR}`` substitution and
validation against the schema, each problem reported with its exact location; then
``gw.config.assemble`` compiles it.

Any problem refuses the whole file (``ConfigError`` lists them all).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import ValidationError

from gw.config.assemble import Config, assemble
from gw.config.settings import GatewaySettings
from gw.errors import ConfigError

_ENV_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load_config(path: str, environ: Mapping[str, str] | None = None) -> Config:
    """Read, substitute, validate and compile the file at ``path``.

    Raises:
        ConfigError: listing every problem with its location.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as ex:
        raise ConfigError([f"cannot read the file ({ex.strerror})"]) from None
    return parse_config(_parse_yaml(text, path), os.environ if environ is None else environ, path)


def parse_config(data: Any, environ: Mapping[str, str], source: str = "<config>") -> Config:
    """Validate already-parsed YAML/JSON data and compile it."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: the top level must be a mapping of settings"])
    problems: list[str] = []
    data = _substitute(data, environ, "", problems)
    if problems:
        raise ConfigError(problems)
    settings = _validate(data)
    return assemble(settings, source)


def _parse_yaml(text: str, path: str) -> Any:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as ex:
        raise ConfigError([f"not valid YAML/JSON: {ex}"]) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys instead of keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (line {mark.line + 1})", mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _substitute(value: Any, environ: Mapping[str, str], where: str, problems: list[str]) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string; ``$$`` is a literal ``$``."""
    if isinstance(value, dict):
        return {k: _substitute(v, environ, _join(where, k), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, environ, f"{where}[{i}]", problems) for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        problems.append(f"{where}: environment variable {name} is not set (and has no default)")
        return ""

    return _ENV_REF.sub(replace, value)


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _validate(data: dict[str, Any]) -> GatewaySettings:
    try:
        return GatewaySettings.model_validate(data)
    except ValidationError as ex:
        raise ConfigError([_describe(err) for err in ex.errors()]) from None


def _describe(err: Any) -> str:
    where = ""
    for part in err["loc"]:
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    if err["type"] == "extra_forbidden":
        return f"{where}: unknown key"
    message = str(err["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}"


def load_targets(path: str) -> list[tuple[str, str]]:
    """Check the file at ``path``; return its ``(upstream, target URL)`` pairs.

    The gunicorn master's check before it publishes the file (``gw.host.runtime.stage_config``):
    the pairs are the keys of the host's health table.

    Raises:
        ConfigError: listing every problem with its location.
    """
    config = load_config(path)
    return [pair for spec in config.upstreams.values() for pair in spec.pairs()]
