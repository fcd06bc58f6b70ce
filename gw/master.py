"""What the gunicorn master does for gw: prepare the host before forking, stage the config.

``gunicorn.conf.py`` calls ``prepare`` once before forking, and ``stage_config`` at start and
on every HUP. The runtime directory itself is ``gw.host.runtime``'s; this module names what
each feature keeps there: the rate-limit table, the health table and the response cache.
The master never builds the app (``gw.app``): it would cache the config, and HUP would stop
reloading it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

from gw.cache.store import CACHE_DIR, reset_store
from gw.errors import ConfigError
from gw.health import layout as health_layout
from gw.health import state as health_state
from gw.host import rundir, runtime
from gw.limits import shared as limits_shared
from gw.observe import audit


def prepare() -> str | None:
    """Create, claim and fill the runtime directory; return a dir to clean up on exit.

    Raises:
        SystemExit: the directory is another gateway's, or not a private one of this user.
        RuntimeDirUnusable: the directory or its shared files cannot be created.
    """
    return runtime.prepare(_create_shared_files)


def _create_shared_files(directory: str) -> None:
    """Make the host's tables (every block allocated now) and empty the cache."""
    limits_shared.create_in(directory)
    # Fresh target state: no ejection outlives a restart.
    health_state.create(os.path.join(directory, health_layout.TABLE_FILE))
    reset_store(os.path.join(directory, CACHE_DIR))  # no entry outlives a restart either


def stage_config() -> None:
    """Check ``GW_CONFIG`` and publish it as the copy every worker loads (``GW_ACTIVE_CONFIG``).

    gunicorn loads the app again in every worker it starts, after a HUP and also when it
    replaces a crashed or timed-out worker, and a worker that fails to boot takes the master
    down. So workers never read the file an operator is editing: they read the last copy
    that passed validation. Called by the master at start (an invalid file refuses to start)
    and on every HUP (an invalid file is reported and the previous copy keeps serving).

    Raises:
        ConfigError: the file is invalid; the published copy, if any, is unchanged.
        RuntimeDirUnusable: the copy cannot be written; the published copy is unchanged.
    """
    from gw.config.load import load_targets  # the master checks; it never builds the app

    source = os.environ.get("GW_CONFIG")
    if not source:
        raise ConfigError(["GW_CONFIG is not set: name the gateway's config file"])
    _publish_targets(load_targets(source))
    runtime.publish_config(source)


def reload_config() -> None:
    """On HUP: ``stage_config`` and write one audit line, accepted or refused, with the
    sha256 of the config bytes (the published copy's when accepted, the file's when not).

    Raises:
        ConfigError, RuntimeDirUnusable: as ``stage_config`` (after the audit line).
    """
    source = os.environ.get("GW_CONFIG") or ""
    try:
        stage_config()
    except (ConfigError, runtime.RuntimeDirUnusable) as ex:
        problems = len(ex.problems) if isinstance(ex, ConfigError) else 1
        refused = {"result": "refused", "digest": _digest(source), "problems": problems}
        audit.record("config.reload", source, rundir.runtime_dir(), **refused)
        raise
    digest = _digest(os.environ.get("GW_ACTIVE_CONFIG") or source)
    audit.record("config.reload", source, rundir.runtime_dir(), result="accepted", digest=digest)


def _digest(path: str) -> str | None:
    """``sha256:<hex>`` of the file's bytes; None when it cannot be read."""
    try:
        with open(path, "rb") as file:
            return "sha256:" + hashlib.sha256(file.read()).hexdigest()
    except OSError:
        return None


def _publish_targets(pairs: Iterable[tuple[str, str]]) -> None:
    """Enter every (upstream, target) into the host's health table (new ones take a slot)."""
    directory = rundir.runtime_dir()
    if directory is None:
        raise runtime.RuntimeDirUnusable("GW_RUNTIME_DIR is not set: call prepare() first")
    path = os.path.join(directory, health_layout.TABLE_FILE)
    health_state.register(path, list(pairs))
