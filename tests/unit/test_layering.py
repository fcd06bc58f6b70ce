"""Pure modules load nothing but the standard library: importing one costs no third-party package.

``lint-imports`` (setup.cfg ``[importlinter]``) holds the same line in the static import graph;
this test proves it on a real interpreter, where an import inside a function, a plugin hook or a
package's ``__init__`` counts too. Each case imports one module in a new interpreter and lists
what that import added to ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "gw" / "core"
CORE_MODULES = sorted(
    f"gw.core.{path.stem}" for path in CORE.glob("*.py") if path.stem != "__init__"
)

# Prints the names of the modules that importing argv[1] added (not those the interpreter's
# start-up loaded, such as the editable install's import hook).
LOADED_BY = """
import importlib, json, sys
before = set(sys.modules)
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def loaded_by(module: str) -> list[str]:
    """Import ``module`` in a fresh interpreter; return the names of the modules it loaded."""
    done = subprocess.run(
        [sys.executable, "-c", LOADED_BY, module],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    names: list[str] = json.loads(done.stdout)
    return names


def third_party(names: list[str]) -> list[str]:
    """The names that belong neither to the standard library nor to gw."""
    own = sys.stdlib_module_names | {"gw"}
    # _sysconfigdata_<abi>: the standard library's sysconfig data, named per platform
    return [
        name
        for name in names
        if name.partition(".")[0] not in own and not name.startswith("_sysconfigdata_")
    ]


def test_core_modules_are_found() -> None:
    """The cases below cover gw.core's modules (a parametrization over none would pass)."""
    assert "gw.core.paths" in CORE_MODULES
    assert "gw.core.routing" in CORE_MODULES


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_loads_only_the_standard_library_and_errors(module: str) -> None:
    """A gw.core module loads the standard library, gw.core and gw.errors: nothing else."""
    loaded = loaded_by(module)
    assert module in loaded
    assert third_party(loaded) == []
    own = {"gw", "gw.core", "gw.errors"}
    gw_modules = [name for name in loaded if name.partition(".")[0] == "gw"]
    assert [n for n in gw_modules if n not in own and not n.startswith("gw.core.")] == []


def test_cors_loads_only_the_standard_library() -> None:
    """The CORS policy is pure: importing gw.cors loads no third-party package (no pydantic)."""
    loaded = loaded_by("gw.cors")
    assert "gw.cors" in loaded
    assert third_party(loaded) == []


def test_upstream_client_loads_no_config_layer() -> None:
    """The upstream client loads no configuration code: no gw.config, pydantic, yaml or PyJWT."""
    loaded = loaded_by("gw.upstream.client")
    assert "gw.upstream.client" in loaded
    config = [n for n in loaded if n == "gw.config" or n.startswith("gw.config.")]
    assert config == []
    assert [n for n in loaded if n.partition(".")[0] in {"pydantic", "yaml", "jwt"}] == []
