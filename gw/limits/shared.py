"""The host's rate-limit table in its runtime directory: made by the master, opened by each
worker after the fork.

The gunicorn master calls ``create_in(runtime)`` before forking (``gw.master``); each worker
calls ``open_shared_table`` when it builds its admission stage. ``GW_RATELIMIT_SLOTS`` sizes
the table (default 65536 slots).
"""

from __future__ import annotations

import logging
import os

from gw.host import rundir
from gw.limits import Limiter, LimiterUnavailable
from gw.limits.table import SharedTable

log = logging.getLogger("gw")

TABLE_FILE = "ratelimit.table"
DEFAULT_SLOTS = 65536


def create_in(runtime: str) -> None:
    """Create a fresh table in ``runtime`` (every block allocated now).

    Raises:
        OSError: the directory cannot take it (full, read-only).
    """
    slots = int(os.environ.get("GW_RATELIMIT_SLOTS", str(DEFAULT_SLOTS)))
    SharedTable.create(os.path.join(runtime, TABLE_FILE), slots=slots)


def open_shared_table(deadline: float) -> Limiter:
    """Open the host's table in this worker; without a master-made one, make a private one.

    Raises:
        LimiterUnavailable: no private table could be made either (a full or read-only
            temp dir: the rule's on_error decides).
        TableLayoutError: the table there is not one this gw can use.

    Warning:
        A private table is exact only inside one process: run gw through its
        gunicorn.conf.py so that every worker shares the master's table.
    """
    runtime = rundir.runtime_dir()
    path = os.path.join(runtime, TABLE_FILE) if runtime else ""
    if not path or not os.path.exists(path):
        try:
            path = os.path.join(rundir.private_dir("gw-private-"), TABLE_FILE)
            SharedTable.create(path, slots=DEFAULT_SLOTS)
        except OSError as ex:
            raise LimiterUnavailable(f"cannot create a private rate-limit table: {ex}") from ex
        log.warning("no shared rate-limit table (GW_RUNTIME_DIR); using a per-process one")
    return SharedTable.open(path, deadline=deadline)
