"""Where a gateway's runtime directory is: one rule for the server and for the ``gw`` CLI.

The runtime directory holds what the workers of one gateway share (rate-limit table, health
table, cache, metrics files). The gunicorn master picks it with ``runtime_dir_for`` and claims
it; the operator's commands (``gw limits``, ``gw cache``, ``gw upstreams``) find it with
``locate``, from the config file the gateway serves, and refuse when no gateway runs there.

- ``GW_RUNTIME_DIR``, when set, names it (systemd: ``/run/gw``).
- Otherwise it is derived from the config file's real path and the user:
  ``/dev/shm/gw-<uid>-<sha256 of the path, 16 hex>`` (the system temp dir without /dev/shm).

A running master holds an exclusive ``flock`` on ``gateway.lock`` in the directory (its
workers inherit it), and ``gateway.json`` says which config it serves.

This is the one module of gw that reads ``GW_RUNTIME_DIR``: everything else asks
``runtime_dir()`` (the master publishes its choice with ``use``, and the workers inherit
it). ``private_dir`` makes the fallback for a process that runs without one. Pure standard
library.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Mapping

ENV = "GW_RUNTIME_DIR"
SYSTEMD_DIR = "/run/gw"  # deploy/gw.service's RuntimeDirectory
LOCK_FILE = "gateway.lock"
INFO_FILE = "gateway.json"

_claimed: int | None = None  # the master's lock descriptor, held for its lifetime


class RuntimeDirError(Exception):
    """The runtime directory cannot be used or found; the message says what to do."""


def runtime_dir() -> str | None:
    """Return this gateway's runtime directory (``GW_RUNTIME_DIR``), or None when unset."""
    return os.environ.get(ENV) or None


def use(path: str) -> None:
    """Make ``path`` this gateway's runtime directory: for this process and its children."""
    os.environ[ENV] = path


def private_dir(prefix: str, *, in_memory: bool = False) -> str:
    """Make a fresh directory that only this user can enter; return its path.

    The fallback of a process that has no runtime directory (its tables and cache are then
    its own). ``in_memory`` puts it under /dev/shm where there is one; otherwise it goes in
    the system temp dir. It is removed when this process exits (``remove_at_exit``).
    """
    base = _memory_base() if in_memory else None
    # APPSEC: mkdtemp makes a fresh 0700 directory with an unguessable name (O_EXCL): nothing
    # another user planted in a shared temp dir is reused.
    path = tempfile.mkdtemp(prefix=prefix, dir=base)
    remove_at_exit(path)
    return path


def remove_at_exit(path: str) -> None:
    """Remove the directory ``path`` when this process exits, however it exits but by
    ``os._exit`` or a fatal signal; not when a process forked from this one exits (it inherits
    the exit handler, and may share the directory with this one)."""
    owner = os.getpid()

    def remove() -> None:
        if os.getpid() == owner:
            shutil.rmtree(path, ignore_errors=True)

    atexit.register(remove)


def runtime_dir_for(config_path: str | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """Return the runtime directory of the gateway serving ``config_path``.

    ``GW_RUNTIME_DIR`` if set; else the directory derived from the config's real path; None
    without either.
    """
    explicit = environ.get(ENV)
    if explicit:
        return explicit
    return default_runtime_dir(config_path) if config_path else None


def default_runtime_dir(config_path: str) -> str:
    """Return the directory derived from the config file's real path and this user."""
    digest = hashlib.sha256(os.path.realpath(config_path).encode()).hexdigest()[:16]
    return os.path.join(_memory_base() or tempfile.gettempdir(), f"gw-{os.getuid()}-{digest}")


def _memory_base() -> str | None:
    """Return /dev/shm where it exists (a memory file system: mmap'd tables stay in RAM)."""
    return "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108


def make_private_dir(path: str) -> None:
    """Create ``path`` (0700), or accept it if it is already a private directory of this user.

    Raises:
        RuntimeDirError: it exists as something else (a symlink, another user's, or open to
            others).
    """
    try:
        os.mkdir(path, 0o700)
        return
    except FileExistsError:
        pass
    info = os.lstat(path)
    # APPSEC: a derived name in /dev/shm is predictable, and anyone may create files there.
    # Only a real directory owned by this user and closed to others is used: never a symlink
    # or a directory another user planted to read or replace the gateway's tables.
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise RuntimeDirError(
            f"{path} exists but is not a private directory of this user: remove it, or set "
            f"{ENV} to a directory of your own"
        )


def claim(path: str, config_path: str | None) -> None:
    """Mark ``path`` as this running gateway's (exclusive lock, ``gateway.json``).

    Raises:
        RuntimeDirError: another running gateway has it (two masters would reset each
            other's tables).
    """
    global _claimed
    fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        other = _info(path)
        raise RuntimeDirError(
            f"another gateway (pid {other.get('pid', '?')}, config {other.get('config', '?')}) "
            f"is running from {path}; stop it, or give this one its own {ENV}"
        ) from None
    _claimed = fd
    info = {"pid": os.getpid(), "config": os.path.realpath(config_path) if config_path else None}
    staging = os.path.join(path, INFO_FILE + ".new")
    with open(staging, "w", encoding="utf-8") as handle:
        json.dump(info, handle)
    os.replace(staging, os.path.join(path, INFO_FILE))


def is_live(path: str) -> bool:
    """Whether a running gateway holds ``path`` (its master or a worker is alive)."""
    try:
        fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except PermissionError:
        return True  # another user's gateway: opening its tables will say more
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the shared lock, if taken
    return False


def locate(config_path: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """Return the runtime directory of the running gateway that serves ``config_path``.

    Without ``GW_RUNTIME_DIR``: the directory derived from the config, then systemd's
    ``/run/gw`` if the gateway there serves that config (or if no config is given).

    Raises:
        RuntimeDirError: no running gateway was found; the message says how to point at one.
    """
    primary = runtime_dir_for(config_path, environ)  # where that gateway put it
    wanted = os.path.realpath(config_path) if config_path else None
    if environ.get(ENV) and primary:
        return _check_explicit(primary, wanted)
    candidates = [primary] if primary else []
    candidates.append(SYSTEMD_DIR)
    for path in candidates:
        # A derived directory's name already says which config it serves; /run/gw's does not.
        if is_live(path) and (path != SYSTEMD_DIR or _serves(path, wanted)):
            return path
    what = f"serves {config_path}" if config_path else "was found"
    hint = "" if config_path else "pass -c with the config file the gateway serves, or "
    raise RuntimeDirError(
        f"no running gateway {what} (looked in {', '.join(candidates)}). Start it, or "
        f"{hint}set {ENV} to the runtime directory of the one you mean (the gateway's own "
        f"{ENV}; {SYSTEMD_DIR} under systemd)"
    )


def _check_explicit(path: str, wanted: str | None) -> str:
    if not is_live(path):
        raise RuntimeDirError(
            f"no running gateway in {ENV}={path}; start it, or unset {ENV} (or set it to the "
            "runtime directory of a running gateway)"
        )
    served = _info(path).get("config")
    if wanted is not None and served is not None and served != wanted:
        raise RuntimeDirError(
            f"the gateway in {ENV}={path} serves {served}, not {wanted}: unset {ENV}, or "
            "pass that gateway's config file"
        )
    return path


def _serves(path: str, wanted: str | None) -> bool:
    return wanted is None or _info(path).get("config") in (None, wanted)


def _info(path: str) -> dict[str, object]:
    try:
        with open(os.path.join(path, INFO_FILE), encoding="utf-8") as handle:
            found = json.load(handle)
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}
