"""Audit lines for operator actions (``gw limits reset``, ``gw cache purge``).

Seed 002: "log ... administrative actions". Each action is one JSON object, written twice:

- on the command's stderr through the ``gw.observe.audit`` logger, in the gateway's own format, the
  same logger and shape as the gateway's ``auth_failure`` lines (journald keeps it when the
  command runs from a unit or a logged session);
- appended to ``audit.log`` in the gateway's runtime directory (``/run/gw/audit.log`` under
  systemd), next to the state it changed, so ``tail /run/gw/audit.log`` shows who reset what.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import time
from typing import Any

from gw.observe.accesslog import configure_diagnostics

AUDIT_FILE = "audit.log"
log = logging.getLogger("gw.audit")


def record(action: str, target: str, runtime_dir: str | None, **fields: Any) -> None:
    """Write one audit line for ``action`` on ``target`` (a table, a cache directory, a URL)."""
    line = {
        "event": "admin_action",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "action": action,
        "target": target,
        **{k: v for k, v in fields.items() if v is not None},
        **_actor(),
    }
    text = json.dumps(line, separators=(",", ":"), ensure_ascii=True)
    configure_diagnostics()
    log.warning(text)
    if runtime_dir:
        _append(os.path.join(runtime_dir, AUDIT_FILE), text)


def _actor() -> dict[str, Any]:
    # APPSEC: the uid is what the kernel says; names from the environment (USER, SUDO_USER)
    # can be set by anyone, so only sudo's is kept, and labelled as what sudo claims.
    uid = os.getuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = None
    actor: dict[str, Any] = {"uid": uid, "user": user, "pid": os.getpid()}
    if os.environ.get("SUDO_USER"):
        actor["sudo_user"] = os.environ["SUDO_USER"]
    return actor


def _append(path: str, text: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, (text + "\n").encode())  # one write: lines never interleave
        finally:
            os.close(fd)
    except OSError as ex:
        log.error("could not append the audit line to %s: %s", path, ex.strerror)
