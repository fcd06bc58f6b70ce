"""gw's declared dependencies cover everything a plain install imports.

A module that reaches the test virtualenv only through the test extras (or through an extra of a
dependency that gw does not ask for) breaks a fresh install while every test passes: gunicorn
26+'s gevent worker imports ``packaging``, which gunicorn lists only under its ``[gevent]``
extra, and pytest brought it here (issue 12). This test is the quick, in-suite guard;
``scripts/fresh-install-check.sh`` (run by CI) proves it on a real install without extras.
"""

from __future__ import annotations

import configparser
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]

# What a plain install runs: gunicorn's master with the shipped gunicorn.conf.py (which patches
# with gevent.monkey), each worker class gw offers, the app, and the gw command.
ENTRY_MODULES = [
    "gunicorn.app.wsgiapp",
    "gunicorn.arbiter",
    "gevent.monkey",
    "gw.edge.worker",
    "gunicorn.workers.gthread",
    "gunicorn.workers.sync",
    "gw.app",
    "gw.cli",
]

# Imports them in a new interpreter; prints the top-level names of the modules they loaded (not
# those the interpreter's start-up loaded, such as setuptools' and the editable install's hooks).
IMPORT_ALL = """
import importlib, json, sys
def top_level():
    return {name.partition(".")[0] for name in sys.modules}
before = top_level()
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
print(json.dumps(sorted(top_level() - before)))
"""


def declared_requirements() -> list[Requirement]:
    """gw's install_requires, from setup.cfg: the source of truth, even before a reinstall."""
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    lines = parser["options"]["install_requires"].strip().splitlines()
    return [Requirement(line.strip()) for line in lines if line.strip()]


def applies(requirement: Requirement, extras: frozenset[str]) -> bool:
    """Whether a dependency's requirement is installed when it is asked for with these extras."""
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({"extra": extra}) for extra in extras | {""})


def install_closure(requirements: list[Requirement]) -> set[str]:
    """The distributions pip installs for these requirements (installed metadata, bounded)."""
    todo = [(canonicalize_name(r.name), frozenset(r.extras)) for r in requirements]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo and len(seen) < 1000:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            if applies(requirement, extras):
                todo.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    return {name for name, _ in seen}


def imported_distributions() -> dict[str, set[str]]:
    """Top-level module -> the distributions that provide it, for everything the entry modules
    load. Left out: the standard library, gw itself, and names no installed distribution's file
    list provides (modules that extensions register at run time, such as ``_cython_3_3_0``)."""
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL, json.dumps(ENTRY_MODULES)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    providers = metadata.packages_distributions()
    found: dict[str, set[str]] = {}
    for module in json.loads(result.stdout):
        if module in sys.stdlib_module_names or module in ("gw", "__main__"):
            continue
        if module in providers:
            found[module] = {canonicalize_name(d) for d in providers[module]}
    return found


def test_every_module_a_plain_install_imports_comes_from_a_declared_dependency() -> None:
    allowed = install_closure(declared_requirements())
    assert "gunicorn" in allowed and "gevent" in allowed
    undeclared = {
        module: sorted(dists)
        for module, dists in imported_distributions().items()
        if not dists & allowed
    }
    assert undeclared == {}, f"imported, but not installed by `pip install gw`: {undeclared}"
