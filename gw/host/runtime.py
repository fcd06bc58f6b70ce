"""The host's runtime directory as the gunicorn master prepares it: created, claimed, filled.

The master calls ``prepare`` once before forking and ``publish_config`` at start and on
every HUP (both through ``gw.master``, which names what each feature puts in the
directory); workers inherit ``GW_RUNTIME_DIR`` through the environment and open the shared
files after the fork. This module knows no feature: it is handed a function that makes
their files.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable

from gw.host import rundir

ACTIVE_CONFIG = "active-config.yaml"


class RuntimeDirUnusable(Exception):
    """The runtime directory cannot take gw's shared files (full, read-only, not writable).

    Its message is one line for the operator; no traceback is needed to act on it.
    """


def prepare(make_shared_files: Callable[[str], None]) -> str | None:
    """Create and claim the runtime directory, then fill it; return a dir to clean up.

    ``GW_RUNTIME_DIR`` names the directory (systemd's ``RuntimeDirectory``, ``/run/gw``); when
    unset, ``gw.host.rundir.runtime_dir_for`` derives one from ``GW_CONFIG`` (the rule the CLI
    uses to find this gateway), which is returned so the master can remove it on exit.
    The master claims the directory: a second gateway on it refuses to start. Then
    ``make_shared_files(directory)`` makes every feature's files (OSError when it cannot).

    Raises:
        SystemExit: the directory is another gateway's, or not a private one of this user.
        RuntimeDirUnusable: the directory or its shared files cannot be created.
    """
    config = os.environ.get("GW_CONFIG")
    derived = rundir.runtime_dir() is None
    runtime = rundir.runtime_dir_for(config) or rundir.private_dir("gw-", in_memory=True)
    try:
        if derived:
            rundir.make_private_dir(runtime)
        else:
            os.makedirs(runtime, mode=0o700, exist_ok=True)
        rundir.claim(runtime, config)
        rundir.use(runtime)
        make_shared_files(runtime)
    except rundir.RuntimeDirError as ex:
        raise SystemExit(f"gw: {ex}") from None
    except OSError as ex:
        raise RuntimeDirUnusable(unusable(runtime, "its shared tables", ex)) from None
    return runtime if derived else None


def unusable(runtime: str, what: str, ex: OSError) -> str:
    """One line naming the directory, what failed and what to do."""
    return (
        f"runtime directory {runtime} cannot take {what}: {ex.strerror or ex}; free space "
        "there, make it writable, or point GW_RUNTIME_DIR elsewhere"
    )


def publish_config(source: str) -> str:
    """Copy the checked config ``source`` into the runtime directory for every worker to load.

    The copy replaces the previous one atomically and is named in ``GW_ACTIVE_CONFIG``.
    Returns its path.

    Raises:
        RuntimeDirUnusable: the copy cannot be written; the published copy is unchanged.
    """
    runtime = rundir.runtime_dir()
    if runtime is None:
        raise RuntimeDirUnusable("GW_RUNTIME_DIR is not set: prepare the runtime directory first")
    active = os.path.join(runtime, ACTIVE_CONFIG)
    staging = active + ".new"
    try:
        shutil.copyfile(source, staging)
        os.replace(staging, active)
    except OSError as ex:
        with contextlib.suppress(OSError):
            os.unlink(staging)
        raise RuntimeDirUnusable(unusable(runtime, "the config copy", ex)) from None
    os.environ["GW_ACTIVE_CONFIG"] = active
    return active


def cleanup_at_exit(created: str | None) -> None:
    """Remove the directory ``prepare`` derived when this process exits, however it exits (the
    one place it is removed; None: it was given, so it stays).

    gunicorn's ``on_exit`` runs only for a master that started and stops normally: a refused
    start, or an error in its main loop (a worker class that does not load), skips it. Not in
    a process forked from this one (the workers inherit the exit handler).
    """
    if created:
        rundir.remove_at_exit(created)
