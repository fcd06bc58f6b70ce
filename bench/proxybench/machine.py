"""What the benchmark ran on: cores, kernel and the versions of every moving part."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from proxybench.targets import EXPRESS_DIR, REPO_DIR, python_path


def _output(argv: list[str], cwd: Path | None = None) -> str | None:
    """Return the first line a command prints on stdout or stderr, or None if it cannot run."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else None


def _cpu_model() -> str | None:
    """Return the processor model name from /proc/cpuinfo."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else None


def _npm_version(package: str) -> str | None:
    """Return the installed version of an npm package of the Express peer."""
    try:
        manifest = json.loads((EXPRESS_DIR / "node_modules" / package / "package.json").read_text())
    except (OSError, ValueError):
        return None
    version: str | None = manifest.get("version")
    return version


def _gw_python(venv: Path | None) -> str:
    """Return the interpreter that gw's gunicorn runs on (``venv``'s, else the repo's)."""
    python = Path(python_path(venv))
    return str(python) if python.exists() else sys.executable


def describe(venv: Path | None = None) -> dict[str, Any]:
    """Return the machine and software versions for the JSON report (``venv``: gw's
    virtualenv, if not the repository's)."""
    python = _gw_python(venv)
    probe = "import gunicorn, falcon, urllib3; print(gunicorn.__version__, falcon.__version__, "
    probe += "urllib3.__version__)"
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "loadavg_at_start": [round(value, 2) for value in os.getloadavg()],
        "python": _output([python, "--version"]),
        "gunicorn_falcon_urllib3": _output([python, "-c", probe]),
        "node": _output(["node", "--version"]),
        "express": _npm_version("express"),
        "http_proxy_middleware": _npm_version("http-proxy-middleware"),
        "nginx": _output(["nginx", "-v"]),
        "wrk": _output(["wrk", "--version"]),
        "git_commit": _output(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_DIR),
        "gw_uncommitted_changes": _dirty(),
    }


def _dirty() -> bool | None:
    """Return whether gw's code or gunicorn.conf.py differ from the commit (None: no git)."""
    argv = ["git", "status", "--porcelain", "--", "gw", "gunicorn.conf.py"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, cwd=REPO_DIR)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return bool(done.stdout.strip()) if done.returncode == 0 else None
