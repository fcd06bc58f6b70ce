"""Per-host runtime state shared by the gunicorn master and its workers: the directory that
holds the rate-limit table (and, later, metrics files), and how each side opens it.

The master calls ``prepare`` once before forking (from ``gunicorn.conf.py``); workers inherit
``GW_RUNTIME_DIR`` through the environment and open the table after the fork.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable

from gw.cache.store import reset_store
from gw.errors import ConfigError
from gw.health import state as health_state
from gw.host import rundir
from gw.limits import Limiter, LimiterUnavailable
from gw.limits.table import SharedTable

log = logging.getLogger("gw")

TABLE_FILE = "ratelimit.table"
ACTIVE_CONFIG = "active-config.yaml"
DEFAULT_SLOTS = 65536


class RuntimeDirUnusable(Exception):
    """The runtime directory cannot take gw's shared files (full, read-only, not writable).

    Its message is one line for the operator; no traceback is needed to act on it.
    """


def prepare() -> str | None:
    """Create the runtime directory (if not given) and a fresh table; return a dir to clean up.

    ``GW_RUNTIME_DIR`` names the directory (systemd's ``RuntimeDirectory``, ``/run/gw``); when
    unset, ``gw.host.rundir.runtime_dir_for`` derives one from ``GW_CONFIG`` (the rule the CLI
    uses to find this gateway), which is returned so the master can remove it on exit.
    The master claims the directory: a second gateway on it refuses to start.
    """
    config = os.environ.get("GW_CONFIG")
    derived = not os.environ.get(rundir.ENV)
    runtime = rundir.runtime_dir_for(config) or _private_dir()
    try:
        if derived:
            rundir.make_private_dir(runtime)
        else:
            os.makedirs(runtime, mode=0o700, exist_ok=True)
        rundir.claim(runtime, config)
        os.environ[rundir.ENV] = runtime
        _create_shared_files(runtime)
    except rundir.RuntimeDirError as ex:
        raise SystemExit(f"gw: {ex}") from None
    except OSError as ex:
        raise RuntimeDirUnusable(_unusable(runtime, "its shared tables", ex)) from None
    return runtime if derived else None


def _create_shared_files(runtime: str) -> None:
    """Make the host's tables (every block allocated now) and empty the cache."""
    slots = int(os.environ.get("GW_RATELIMIT_SLOTS", str(DEFAULT_SLOTS)))
    SharedTable.create(os.path.join(runtime, TABLE_FILE), slots=slots)
    health_path = health_state.default_path()
    assert health_path is not None
    health_state.create(health_path)  # fresh target state: no ejection outlives a restart
    reset_store(os.path.join(runtime, "cache"))  # no entry outlives a restart either


def _unusable(runtime: str, what: str, ex: OSError) -> str:
    """One line naming the directory, what failed and what to do."""
    return (
        f"runtime directory {runtime} cannot take {what}: {ex.strerror or ex}; free space "
        "there, make it writable, or point GW_RUNTIME_DIR elsewhere"
    )


def _private_dir() -> str:
    """A fresh directory, when no config names one (then the config check refuses to start)."""
    # APPSEC: mkdtemp makes a fresh 0700 directory; /dev/shm keeps the table in memory.
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108
    return tempfile.mkdtemp(prefix="gw-", dir=base)


def stage_config(load_targets: Callable[[str], Iterable[tuple[str, str]]]) -> None:
    """Check ``GW_CONFIG`` and publish it as the copy every worker loads (``GW_ACTIVE_CONFIG``).

    gunicorn loads the app again in every worker it starts, after a HUP and also when it
    replaces a crashed or timed-out worker, and a worker that fails to boot takes the master
    down. So workers never read the file an operator is editing: they read the last copy
    that passed validation. Called by the master at start (an invalid file refuses to start)
    and on every HUP (an invalid file is reported and the previous copy keeps serving).

    Args:
        load_targets: checks the file at a path and returns its ``(upstream, target URL)``
            pairs (``gw.config.load.load_targets``; the master checks, it never builds the app).

    Raises:
        ConfigError: the file is invalid; the published copy, if any, is unchanged.
        RuntimeDirUnusable: the copy cannot be written; the published copy is unchanged.
    """
    source = os.environ.get("GW_CONFIG")
    if not source:
        raise ConfigError(["GW_CONFIG is not set: name the gateway's config file"])
    targets = load_targets(source)
    runtime = os.environ["GW_RUNTIME_DIR"]
    _publish_targets(targets)
    active = os.path.join(runtime, ACTIVE_CONFIG)
    staging = active + ".new"
    try:
        shutil.copyfile(source, staging)
        os.replace(staging, active)
    except OSError as ex:
        with contextlib.suppress(OSError):
            os.unlink(staging)
        raise RuntimeDirUnusable(_unusable(runtime, "the config copy", ex)) from None
    os.environ["GW_ACTIVE_CONFIG"] = active


def _publish_targets(pairs: Iterable[tuple[str, str]]) -> None:
    """Enter every (upstream, target) into the host's health table (new ones take a slot)."""
    path = health_state.default_path()
    assert path is not None
    health_state.register(path, pairs)


def cleanup(created: str | None) -> None:
    if created:
        shutil.rmtree(created, ignore_errors=True)


def open_shared_table(deadline: float) -> Limiter:
    """Open the host's table in this worker; without a master-made one, make a private one.

    Warning:
        A private table is exact only inside one process: run gw through its
        gunicorn.conf.py so that every worker shares the master's table.
    """
    runtime = os.environ.get("GW_RUNTIME_DIR")
    path = os.path.join(runtime, TABLE_FILE) if runtime else ""
    if not path or not os.path.exists(path):
        try:
            private = tempfile.mkdtemp(prefix="gw-private-")
            path = os.path.join(private, TABLE_FILE)
            SharedTable.create(path, slots=DEFAULT_SLOTS)
        except OSError as ex:  # a full or read-only /tmp: the rule's on_error decides
            raise LimiterUnavailable(f"cannot create a private rate-limit table: {ex}") from ex
        log.warning("no shared rate-limit table (GW_RUNTIME_DIR); using a per-process one")
    return SharedTable.open(path, deadline=deadline)
