"""gunicorn's request corpus, taken from the sdist of the installed gunicorn at test time.

The sdist ships ``tests/requests/valid/NNN.http`` (with ``NNN.py`` holding the expected parse)
and ``tests/requests/invalid/NNN.http`` (``NNN.py`` names the expected exception). The corpus is
downloaded once with pip into a cache directory and never copied into this repository.

The ``.http`` format is gunicorn's (``tests/treq.py``): real newlines are dropped, ``\\r\\n``,
``\\n``, ``\\t`` and ``\\0`` are written as escapes, and ``\\xHH`` stands for any byte.
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PIP_TIMEOUT = 300


class CorpusUnavailable(RuntimeError):
    """The sdist could not be downloaded or unpacked."""


@dataclass(frozen=True)
class ExpectedRequest:
    """One request as gunicorn's parser is expected to read it."""

    method: str
    raw_uri: str
    version: tuple[int, int]
    headers: tuple[tuple[str, str], ...]  # names upper case, as gunicorn reports them
    body: bytes
    trailers: tuple[tuple[str, str], ...] = ()

    @property
    def persistent(self) -> bool:
        """Whether a server may read another request after this one (RFC 9112 section 9.3)."""
        tokens = {
            t.strip().lower() for n, v in self.headers if n == "CONNECTION" for t in v.split(",")
        }
        if "close" in tokens:
            return False
        return self.version >= (1, 1) or "keep-alive" in tokens


@dataclass(frozen=True)
class Case:
    """One corpus file: its bytes, gunicorn's verdict and the non-default settings it needs."""

    kind: str  # "valid" or "invalid"
    name: str  # the file name without .http, e.g. "025_line"
    data: bytes
    settings: dict[str, Any] = field(default_factory=dict)
    expected: tuple[ExpectedRequest, ...] = ()  # valid cases
    error: str = ""  # invalid cases: the exception gunicorn's parser raises

    @property
    def id(self) -> str:
        return f"{self.kind}/{self.name}"


def gunicorn_version() -> str:
    return importlib.metadata.version("gunicorn")


def cache_dir() -> Path:
    configured = os.environ.get("GW_TEST_CORPORA")
    return Path(configured) if configured else Path.home() / ".cache" / "gw-test-corpora"


def corpus_root(version: str | None = None) -> Path:
    """Return ``tests/requests`` of the gunicorn sdist, downloading and unpacking it once.

    Raises:
        CorpusUnavailable: pip could not download the sdist, or it has no request corpus.
    """
    version = version or gunicorn_version()
    cache = cache_dir()
    unpacked = cache / f"gunicorn-{version}"
    requests_dir = unpacked / "tests" / "requests"
    if requests_dir.is_dir():
        return requests_dir
    cache.mkdir(parents=True, exist_ok=True)
    sdist = _download(version, cache)
    _unpack(sdist, unpacked)
    if not requests_dir.is_dir():
        raise CorpusUnavailable(f"{sdist.name} has no tests/requests directory")
    return requests_dir


def _download(version: str, cache: Path) -> Path:
    name = f"gunicorn-{version}.tar.gz"
    if (cache / name).is_file():
        return cache / name
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    command += ["--quiet", f"gunicorn=={version}", "-d", str(cache)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as ex:
        raise CorpusUnavailable(f"pip download gunicorn=={version} failed: {ex}") from None
    if done.returncode != 0 or not (cache / name).is_file():
        tail = (done.stderr or done.stdout)[-2000:]
        raise CorpusUnavailable(f"pip download gunicorn=={version} failed:\n{tail}")
    return cache / name


def _unpack(sdist: Path, target: Path) -> None:
    """Unpack only ``tests/requests`` of the sdist, atomically (rename of a finished dir)."""
    staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target.parent))
    try:
        with tarfile.open(sdist) as tar:
            prefix = f"{target.name}/tests/requests/"
            members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.isfile()]
            tar.extractall(staging, members=members, filter="data")
        try:
            (staging / target.name).rename(target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_cases(root: Path) -> list[Case]:
    """Every valid and invalid case under ``root``, sorted by name."""
    cases = []
    for kind in ("valid", "invalid"):
        for http in sorted((root / kind).glob("*.http")):
            cases.append(_load_case(kind, http))
    return cases


def _load_case(kind: str, http: Path) -> Case:
    namespace = _exec_expectations(http.with_suffix(".py"))
    settings = _non_default_settings(namespace["cfg"])
    data = decode_http(http.read_bytes())
    expect = namespace["request"]
    if kind == "invalid":
        return Case(kind, http.stem, data, settings, error=getattr(expect, "__name__", str(expect)))
    requests = expect if isinstance(expect, list) else [expect]
    return Case(kind, http.stem, data, settings, expected=tuple(map(_expected, requests)))


def decode_http(text: bytes) -> bytes:
    """Decode gunicorn's ``.http`` escapes exactly as its ``tests/treq.py`` does."""
    data = text.replace(b"\n", b"").replace(b"\\r\\n", b"\r\n")
    data = data.replace(b"\\0", b"\000").replace(b"\\n", b"\n").replace(b"\\t", b"\t")
    out = bytearray()
    i = 0
    while i < len(data):
        if data[i : i + 2] == b"\\x" and i + 3 < len(data):
            try:
                out.append(int(data[i + 2 : i + 4], 16))
                i += 4
                continue
            except ValueError:
                pass
        out.append(data[i])
        i += 1
    return bytes(out)


def _exec_expectations(path: Path) -> dict[str, Any]:
    """Run a case's ``.py`` the way gunicorn's harness does (``uri`` and ``cfg`` provided)."""
    from gunicorn.config import Config

    module = types.ModuleType("__gunicorn_case__")
    module.uri = _uri  # type: ignore[attr-defined]
    module.cfg = Config()  # type: ignore[attr-defined]
    loader = importlib.machinery.SourceFileLoader("__gunicorn_case__", str(path))
    loader.exec_module(module)
    return vars(module)


def _uri(raw: str) -> dict[str, Any]:
    return {"raw": raw}


def _non_default_settings(cfg: Any) -> dict[str, Any]:
    from gunicorn.config import Config

    default = Config()
    return {
        name: setting.get()
        for name, setting in cfg.settings.items()
        if setting.get() != default.settings[name].get()
    }


def _bytes(body: bytes | str) -> bytes:
    return body.encode("latin-1") if isinstance(body, str) else body


def _expected(request: dict[str, Any]) -> ExpectedRequest:
    return ExpectedRequest(
        method=request["method"],
        raw_uri=request["uri"]["raw"],
        version=tuple(request["version"]),  # type: ignore[arg-type]
        headers=tuple(tuple(h) for h in request["headers"]),  # type: ignore[misc]
        body=_bytes(request["body"]),
        trailers=tuple(tuple(t) for t in request.get("trailers", [])),  # type: ignore[misc]
    )
