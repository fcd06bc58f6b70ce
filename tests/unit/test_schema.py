"""One schema, one truth: every config the docs show validates against ``gw schema`` and passes
``gw check``, and the shorthand forms ``gw check`` accepts are in the schema too."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gw import cli
from gw.config.schema import config_schema
from tests.data import seeds

ROOT = Path(__file__).resolve().parents[2]
# Values for the ${VAR}s the documents use without a default.
ENV = {
    "JWT_SECRET": "a-test-secret-of-at-least-32-bytes-for-HS256",
    "GW_INTROSPECTION_SECRET": "the-introspection-client-secret",  # client_secret_env
}
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")

# README blocks that show one section of a file and name upstreams defined in another block:
# the test adds those upstreams (one loopback target each) and nothing else. Keyed by the
# heading the block sits under; the reason says why the block cannot stand alone.
README_FRAGMENTS = {
    "## Authentication and the trust model": "its routes point at upstreams shown elsewhere",
    "## Composition: one request, several upstreams": "its parts call upstreams shown elsewhere",
    "## Response cache": "its route points at an upstream shown elsewhere",
}


def _readme_blocks() -> list[tuple[str, str, str]]:
    """Return ``(id, heading, text)`` for every ```yaml block of the README.

    Every ```yaml block of the README is a gw config (or a section of one); fence other YAML
    differently.
    """
    text = (ROOT / "README.md").read_text()
    blocks = []
    for found in re.finditer(r"^```yaml\n(.*?)^```", text, re.S | re.M):
        before = text[: found.start()]
        headings = re.findall(r"^#+ .*$", before, re.M)
        line = before.count("\n") + 1
        blocks.append((f"README.md:{line}", headings[-1] if headings else "", found.group(1)))
    return blocks


def _documents() -> list[tuple[str, str]]:
    docs = [(f"{where} ({heading})", text) for where, heading, text in _readme_blocks()]
    docs.append(("examples/demo/gw.yaml", (ROOT / "examples/demo/gw.yaml").read_text()))
    docs.append(("deploy/gw.example.yaml", (ROOT / "deploy/gw.example.yaml").read_text()))
    docs += [(name, getattr(seeds, name)) for name in dir(seeds) if name.startswith("SEED_")]
    return docs


DOCUMENTS = _documents()


def _substituted(data: Any) -> Any:
    """Substitute ``${VAR}`` as gw does: in the values, with ENV or the default."""
    if isinstance(data, dict):
        return {key: _substituted(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_substituted(value) for value in data]
    if not isinstance(data, str):
        return data

    def value(found: re.Match[str]) -> str:
        name, default = found.group(1), found.group(2)
        if name in ENV:
            return ENV[name]
        assert default is not None, f"${{{name}}} has no default: add a value to ENV"
        return default[2:]

    return _REFERENCE.sub(value, data)


def schema_errors(data: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(config_schema())
    return [
        f"{'.'.join(map(str, error.absolute_path)) or '<top>'}: {error.message[:300]}"
        for error in validator.iter_errors(data)
    ]


def gw_check(tmp_path: Path, data: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """Run ``gw check`` on ``data`` as a file; return its exit status and stderr."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "gw.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = cli.main(["check", "-c", str(path)])
    return status, err.getvalue()


def _completed(where: str, data: dict[str, Any]) -> dict[str, Any]:
    """Add the upstreams a marked README fragment names but does not define."""
    heading = where.partition(" (")[2].rstrip(")")
    if heading not in README_FRAGMENTS:
        return data
    named = {route.get("upstream") for route in data.get("routes", [])}
    for route in data.get("routes", []):
        named |= {part["upstream"] for part in (route.get("aggregate") or {}).get("parts", [])}
    defined = data.get("upstreams", {})
    missing = sorted(n for n in named if n and "://" not in n and n not in defined)
    assert missing, f"{where}: marked as a fragment ({README_FRAGMENTS[heading]}) but stands alone"
    upstreams = {name: {"targets": ["http://127.0.0.1:9"]} for name in missing}
    return {**data, "upstreams": {**data.get("upstreams", {}), **upstreams}}


def test_the_readme_has_config_blocks_and_every_marked_fragment_exists() -> None:
    headings = {heading for _, heading, _ in _readme_blocks()}
    assert len(_readme_blocks()) >= 8
    assert set(README_FRAGMENTS) <= headings


@pytest.mark.parametrize(("where", "text"), DOCUMENTS, ids=[where for where, _ in DOCUMENTS])
def test_every_documented_config_validates_against_the_schema(where: str, text: str) -> None:
    """As an editor sees the file (``${VAR}`` unsubstituted), and as gw reads it."""
    assert schema_errors(yaml.safe_load(text)) == []
    assert schema_errors(_substituted(yaml.safe_load(text))) == []


@pytest.mark.parametrize(("where", "text"), DOCUMENTS, ids=[where for where, _ in DOCUMENTS])
def test_every_documented_config_passes_gw_check(
    where: str, text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = yaml.safe_load(text)
    completed = _completed(where, data)
    status, err = gw_check(tmp_path, text if completed is data else completed, monkeypatch)
    assert (status, [line for line in err.splitlines() if "warning" not in line]) == (0, [])


def _file(route: dict[str, Any], **top: Any) -> dict[str, Any]:
    base = {"path": "/api/**", "upstream": "u"}
    return {
        "upstreams": {"u": {"targets": ["http://127.0.0.1:9"]}},
        "routes": [{**base, **route}],
        **top,
    }


AUTH = {"type": "jwt", "issuer": "i", "secret": ENV["JWT_SECRET"], "audiences": ["a"]}
ACCEPTED = {
    "auth: optional": _file({"auth": "optional"}, auth=AUTH),
    "auth: none": _file({"auth": "none"}, auth=AUTH),
    "auth: required": _file({"auth": "required"}, auth=AUTH),
    "a route cache size with a unit": _file({"cache": {"ttl": 5, "max_body_bytes": "512 KiB"}}),
    "a store size with a unit": _file({"cache": {"ttl": 5}}, cache_store={"max_bytes": "64 MiB"}),
    "seed 002's compression threshold": _file({}, compression={"threshold": 2048}),
    "numbers and booleans from ${VAR}": _file(
        {"read_timeout": "${READ_TIMEOUT:-5}"},
        server={"max_body_bytes": "${MAX_BODY:-1048576}", "access_log": "${ACCESS_LOG:-false}"},
    ),
    "a target as a plain URL": _file({}),
}


@pytest.mark.parametrize("what", ACCEPTED)
def test_what_gw_check_accepts_the_schema_accepts(
    what: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = ACCEPTED[what]
    assert gw_check(tmp_path, data, monkeypatch)[0] == 0
    assert schema_errors(data) == []


REFUSED = {
    "an unknown top-level key": {"rate_limits": {}},
    "an unknown route key": _file({"stripprefix": "/api"}),
    "an unknown auth mode": _file({"auth": "sometimes"}, auth=AUTH),
    "a size in an unknown unit": _file({"cache": {"ttl": 5, "max_body_bytes": "5 parsecs"}}),
    "a word for a number": _file({"read_timeout": "soon"}),
}


@pytest.mark.parametrize("what", REFUSED)
def test_what_both_refuse(what: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = REFUSED[what]
    assert gw_check(tmp_path, data, monkeypatch)[0] == 1
    assert schema_errors(data) != []


def test_gw_schema_prints_a_valid_draft_2020_12_schema() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["schema"]) == 0
    printed = json.loads(out.getvalue())
    jsonschema.Draft202012Validator.check_schema(printed)
    assert printed == config_schema()
