"""Build hook: with ``GW_MYPYC=1``, compile ``gw.core.COMPILED`` with mypyc (PERF).

Without it (the default) gw installs as pure Python. The compiled form needs mypy (the
``lint`` extra), gcc and the Python headers, and ``pip install --no-build-isolation`` so that
the build sees them. Both forms run the in-process tests in CI (``scripts/test-compiled.sh``).
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

from setuptools import setup


def compiled_modules() -> list[str]:
    """The paths of ``gw.core.COMPILED``, read without importing gw."""
    tree = ast.parse(Path("gw/core/__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "COMPILED":
            return [f"gw/core/{name}.py" for name in ast.literal_eval(node.value)]
    raise SystemExit("gw/core/__init__.py: no COMPILED tuple")


def ext_modules() -> list[object]:
    if os.environ.get("GW_MYPYC") != "1":
        return []
    from mypyc.build import mypycify

    return list(mypycify(compiled_modules(), opt_level="3"))


setup(ext_modules=ext_modules())
