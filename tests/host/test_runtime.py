"""The runtime directory: one module reads GW_RUNTIME_DIR, the master prepares it with any
files it is handed, and a process without one gets a private directory."""

from __future__ import annotations

import ast
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gw.host import rundir, runtime

GW = Path(__file__).resolve().parents[2] / "gw"
FEATURES = ("gw.limits", "gw.health", "gw.cache", "gw.auth", "gw.shaping")


def test_runtime_dir_is_the_variable_or_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(rundir.ENV, raising=False)
    assert rundir.runtime_dir() is None
    monkeypatch.setenv(rundir.ENV, "")
    assert rundir.runtime_dir() is None
    rundir.use("/run/gw-test")
    assert rundir.runtime_dir() == "/run/gw-test" == os.environ[rundir.ENV]


def test_a_private_dir_is_fresh_and_closed_to_others() -> None:
    first, second = rundir.private_dir("gw-test-"), rundir.private_dir("gw-test-")
    try:
        assert first != second
        for path in (first, second):
            info = os.lstat(path)
            assert stat.S_ISDIR(info.st_mode) and info.st_mode & 0o777 == 0o700
            assert os.path.basename(path).startswith("gw-test-")
    finally:
        os.rmdir(first)
        os.rmdir(second)


def test_prepare_claims_the_given_dir_and_hands_it_to_the_file_maker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    given = tmp_path / "run"
    monkeypatch.setenv(rundir.ENV, str(given))
    monkeypatch.delenv("GW_ACTIVE_CONFIG", raising=False)
    monkeypatch.setattr(rundir, "_claimed", None)
    made: list[str] = []
    try:
        assert runtime.prepare(made.append) is None  # given, not derived: the master keeps it
        assert made == [str(given)]
        assert rundir.is_live(str(given))  # claimed: a second gateway would refuse
        active = runtime.publish_config(__file__)
        assert active == str(given / runtime.ACTIVE_CONFIG) == os.environ["GW_ACTIVE_CONFIG"]
        assert Path(active).read_text() == Path(__file__).read_text()
    finally:
        if rundir._claimed is not None:
            os.close(rundir._claimed)  # the master holds it for its life; a test lets go


def test_a_file_maker_that_cannot_write_is_one_line_for_the_operator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(rundir.ENV, str(tmp_path / "run"))
    monkeypatch.setattr(rundir, "_claimed", None)

    def full(directory: str) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(runtime.RuntimeDirUnusable, match="No space left on device; free space"):
        runtime.prepare(full)
    if rundir._claimed is not None:
        os.close(rundir._claimed)


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_gw_host_imports_no_feature() -> None:
    for path in sorted((GW / "host").glob("*.py")):
        bad = [m for m in imported_modules(path) if m.startswith(FEATURES)]
        assert bad == [], f"{path.name} imports {bad}"


def test_only_rundir_reads_gw_runtime_dir() -> None:
    readers = set()
    for path in GW.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value == rundir.ENV:
                readers.add(path.relative_to(GW).as_posix())
    assert readers == {"host/rundir.py"}


def _run_child(code: str, temp: Path) -> str:
    """Run ``code`` in a new Python process whose temp dir is ``temp`` and which has no runtime
    directory; return what it printed."""
    env = {k: v for k, v in os.environ.items() if k not in (rundir.ENV, "GW_CONFIG")}
    env["TMPDIR"] = str(temp)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        cwd=GW.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_process_without_a_runtime_dir_leaves_no_private_dir_behind(tmp_path: Path) -> None:
    """The health table a process makes for itself (2.6 MB) goes when the process exits."""
    printed = _run_child(
        """
        from gw.health import state
        table = state.shared()
        print("made", *__import__("os").listdir(__import__("tempfile").gettempdir()))
        """,
        tmp_path,
    )
    assert printed.split()[0] == "made" and printed.split()[1].startswith("gw-health-")
    assert os.listdir(tmp_path) == []


def test_a_forked_child_that_exits_leaves_its_parents_private_dir(tmp_path: Path) -> None:
    """A worker forked from a process inherits its exit handlers, not its directories."""
    printed = _run_child(
        """
        import os, sys
        from gw.host import rundir
        path = rundir.private_dir("gw-test-")
        child = os.fork()
        if child == 0:
            sys.exit(0)  # runs the exit handlers it inherited
        os.waitpid(child, 0)
        print("kept" if os.path.isdir(path) else "gone")
        """,
        tmp_path,
    )
    assert printed.strip() == "kept"
    assert os.listdir(tmp_path) == []
