"""The host-wide table of upstream health, from the master's file to each worker's handle.

Lifecycle: the gunicorn master calls ``create(path, upstream_targets)`` once before forking
(``path`` is ``GW_RUNTIME_DIR/health.table``); each worker opens it lazily after the fork
through ``shared()`` (a pid check reopens it in a new process). The operator's tools read it
from any process with ``gw.health.snapshot.snapshot()``.

The file format is ``gw.health.layout``; a process's handle is ``gw.health.table.HealthTable``.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import Iterable

from gw.health.layout import (
    DEFAULT_ROWS,
    DEFAULT_STRIPES,
    DEFAULT_TARGETS,
    DEFAULT_UPSTREAMS,
    HEADER,
    LAYOUT_VERSION,
    LOCK_MAGIC,
    MAGIC,
    TABLE_FILE,
    Layout,
)
from gw.health.table import HealthTable
from gw.host import files, process, rundir

log = logging.getLogger("gw.health")

__all__ = ["create", "default_path", "register", "shared"]


def create(
    path: str,
    upstream_targets: Iterable[tuple[str, str]] = (),
    *,
    targets: int = DEFAULT_TARGETS,
    upstreams: int = DEFAULT_UPSTREAMS,
    rows: int = DEFAULT_ROWS,
    stripes: int = DEFAULT_STRIPES,
    mode: int = 0o600,
    owner: tuple[int, int] | None = None,
) -> None:
    """Create (or replace) an empty health table at ``path`` and its lock file.

    Call once, in the gunicorn master before it forks. ``upstream_targets`` lists
    ``(upstream name, target URL)`` pairs to enter now, so that the operator sees every
    configured target before any traffic; targets added later (after a reload) take a
    slot on first use.
    """
    for name, value in (("targets", targets), ("upstreams", upstreams), ("rows", rows)):
        if value < 1:
            raise ValueError(f"{name} must be positive, got {value}")
    if not 1 <= stripes <= 1024:
        raise ValueError(f"stripes must be between 1 and 1024, got {stripes}")
    layout = Layout(targets, upstreams, rows, stripes)
    salt = secrets.token_bytes(16)
    header = HEADER.pack(MAGIC, LAYOUT_VERSION, targets, upstreams, rows, stripes, salt)
    lock_size = max(files.LOCK_HEADER_SIZE, stripes + 1)
    files.write_atomically(
        path + ".lock", files.lock_header(LOCK_MAGIC, salt), lock_size, mode, owner
    )
    files.write_atomically(path, header, layout.size, mode, owner)
    register(path, upstream_targets)


def register(path: str, upstream_targets: Iterable[tuple[str, str]]) -> None:
    """Enter ``(upstream, target URL)`` pairs into an existing table (new ones take a slot).

    ``create`` calls it; the master may call it again after a reload so that the operator
    sees new targets before their first request.
    """
    pairs = list(upstream_targets)
    if pairs:
        with HealthTable.open(path) as table:
            for upstream, url in pairs:
                table.upstream(upstream)
                table.target(upstream, url)


def default_path() -> str | None:
    """Return the table path in ``GW_RUNTIME_DIR``, or None when it is not set."""
    runtime = rundir.runtime_dir()
    return os.path.join(runtime, TABLE_FILE) if runtime else None


_SHARED: HealthTable | None = None
_SHARED_LOCK = threading.Lock()


def shared() -> HealthTable:
    """Return this process's handle on the host's table, opening it after a fork.

    Warning:
        Without a master-made table (``GW_RUNTIME_DIR``), a private one is made: health
        is then per process, and each worker must find a dead target on its own.
    """
    table = _SHARED
    # PERF: the pid kept in memory (a getpid is a system call); the handle is opened once per
    # process.
    if table is not None and table.pid == process.pid():
        return table
    with _SHARED_LOCK:
        if _SHARED is None or _SHARED.pid != process.pid():
            _set_shared(_open_default())
        assert _SHARED is not None
        return _SHARED


def _set_shared(table: HealthTable) -> None:
    global _SHARED
    _SHARED = table


def _open_default() -> HealthTable:
    path = default_path()
    if not path or not os.path.exists(path):
        path = os.path.join(rundir.private_dir("gw-health-"), TABLE_FILE)
        create(path)
        log.warning("no shared health table (GW_RUNTIME_DIR): health is tracked per process")
    return HealthTable.open(path)


def _forget_after_fork() -> None:
    """Drop the parent's handle in a child: the child must claim its own row."""
    global _SHARED, _SHARED_LOCK
    _SHARED = None
    _SHARED_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
