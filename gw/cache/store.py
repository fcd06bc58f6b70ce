"""The host's shared response store: one file per entry in the runtime directory.

Layout under ``GW_RUNTIME_DIR/cache`` (tmpfs under systemd's ``RuntimeDirectory``: RAM)::

    locks                           fcntl record locks: byte 0 the size index, 1.. fill locks
    index                           8 bytes: the bytes stored, as counted by writers
    entries/<route hash>/<digest>   one entry: header + body (see ``gw.cache.pack``)
    entries/<route hash>/<digest>.declined  "last fill was not cacheable", until its mtime

An entry is written to a temporary file and renamed over its name, so readers never take a
lock and never see half an entry. Its mtime is set to its expiry, so the sweeper finds
expired entries from ``stat`` alone, and its ctime (set by the rename) tells the oldest.

Size: every writer adds its entry's size to ``index`` under the index lock; when the count
passes ``max_bytes`` that writer sweeps (still under the lock): it sums the real sizes,
deletes expired entries, then the oldest, until 90% of ``max_bytes``, and stores the true
total. Overwrites and purges only make the count too high (an early sweep), never too low,
so the store stays within ``max_bytes`` plus the entries being written at that moment.

Stampede collapse: ``lead`` takes the key's fill lock (a striped fcntl record lock plus a
thread lock, ``gw.host.locks``) for as long as the leader fetches and stores; other
threads and workers that miss the same key wait on it, then find the entry. The kernel
drops a SIGKILLed leader's lock, so the others go on.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

from gw.cache import CachedResponse, CacheKey, Lease, pack, unpack
from gw.cache.settings import CacheStoreSettings
from gw.host import files, rundir
from gw.host.locks import LockUnavailable, StripeLocks

log = logging.getLogger("gw")

CACHE_DIR = "cache"
FILL_STRIPES = 4096
INDEX_STRIPE = 0
INDEX_DEADLINE = 2.0
LOW_WATER = 0.9
TEMP_PREFIX = ".tmp-"
DECLINED_SUFFIX = ".declined"
STALE_TEMP_SECONDS = 60.0
_COUNTER = struct.Struct("<Q")
_PROBE_DEADLINE = 1e-6


@dataclass(slots=True)
class _File:
    """One file found by a sweep."""

    path: str
    size: int
    expires: float
    changed: float


class ResponseCache:
    """Cached responses shared by every thread of every worker of a host.

    Args:
        settings: the ``cache_store`` settings (``max_bytes``, ``lock_timeout``...).
        directory: the store's directory (``runtime_cache_dir()``: ``GW_RUNTIME_DIR/cache``);
            created if missing.
    """

    def __init__(self, settings: CacheStoreSettings, directory: str) -> None:
        self.settings = settings
        self.directory = directory
        self.entries = os.path.join(directory, "entries")
        os.makedirs(self.entries, mode=0o700, exist_ok=True)
        self._failed_stores = 0  # in the current incident (per process; threads may race)
        lock_path = files.ensure_file(os.path.join(directory, "locks"))
        # APPSEC: the index is opened like the lock file, never through a symlink.
        self._index_fd = files.open_existing(files.ensure_file(os.path.join(directory, "index")))
        stripes = FILL_STRIPES + 1
        self._index = StripeLocks(lock_path, stripes, INDEX_DEADLINE)
        self._fill = StripeLocks(lock_path, stripes, settings.lock_timeout)
        self._probe = StripeLocks(lock_path, stripes, _PROBE_DEADLINE)
        self.counts = dict.fromkeys(
            ("hits", "misses", "stores", "waits", "lock_timeouts", "sweeps", "evicted"), 0
        )

    # -- reading ------------------------------------------------------------------------

    def lookup(self, key: CacheKey) -> CachedResponse | None:
        """Return the fresh entry for ``key``, or None (absent, expired, unreadable)."""
        try:
            with open(self._path(key), "rb") as file:
                data = file.read()
        except FileNotFoundError:
            data = b""
        except OSError as ex:
            log.warning("cache read failed for %s: %s", key.route, ex)
            data = b""
        entry = unpack(data, time.time()) if data else None
        self.counts["hits" if entry else "misses"] += 1
        return entry

    # -- filling ------------------------------------------------------------------------

    def lead(self, key: CacheKey) -> Lease:
        """Take ``key``'s fill lock, waiting up to ``lock_timeout`` for another filler."""
        if self._declined(key):
            return Lease(bypass=True)
        stripe = 1 + int(key.digest[:8], 16) % FILL_STRIPES
        try:
            self._probe.acquire(stripe)
            return Lease(leader=True, release=lambda: self._fill.release(stripe))
        except LockUnavailable:
            self.counts["waits"] += 1
        try:
            self._fill.acquire(stripe)
        except LockUnavailable:
            self.counts["lock_timeouts"] += 1
            log.warning("cache fill lock of %s waited %ss", key.route, self.settings.lock_timeout)
            return Lease(waited=True)
        return Lease(leader=True, waited=True, release=lambda: self._fill.release(stripe))

    def store(
        self,
        key: CacheKey,
        status: int,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        ttl: float,
        age: int = 0,
    ) -> bool:
        """Store a response for ``ttl`` seconds; return False if it was not stored."""
        now = time.time()
        data = pack(key, status, headers, body, now, now + ttl, age)
        if ttl <= 0 or len(data) > self.settings.max_bytes * (1 - LOW_WATER):
            return False  # a single entry may not flush a tenth of the store
        try:
            self._write(self._path(key), data, now + ttl)
            self._account(len(data))
        except (OSError, LockUnavailable) as ex:
            self._store_failed(key.route, ex)
            return False
        self.counts["stores"] += 1
        if self._failed_stores:
            log.info("cache stores work again, after %d failed", self._failed_stores)
            self._failed_stores = 0
        return True

    def _store_failed(self, route: str, ex: Exception) -> None:
        """Log the first failed store of an incident (a full directory fails them all)."""
        if not self._failed_stores:
            log.warning(
                "cache store failed for %s: %s; answering as misses, further failures are "
                "counted until a store succeeds",
                route,
                ex,
            )
        self._failed_stores += 1

    def decline(self, key: CacheKey) -> None:
        """Record that ``key``'s fill was not cacheable: misses skip the lock for a while."""
        seconds = self.settings.decline_seconds
        if seconds <= 0:
            return
        try:
            self._write(self._path(key) + DECLINED_SUFFIX, b"", time.time() + seconds)
        except OSError as ex:
            log.warning("cache decline failed for %s: %s", key.route, ex)

    # -- administration -----------------------------------------------------------------

    def purge(self, key: CacheKey | str | None = None, route: str | None = None) -> int:
        """Delete the entries of ``key`` (a CacheKey or digest), of ``route``, or all.

        Returns:
            How many entries were deleted.
        """
        folders = [_route_folder(route)] if route is not None else self._folders()
        if isinstance(key, CacheKey):
            folders = [_route_folder(key.route)] if route in (None, key.route) else []
        digest = key.digest if isinstance(key, CacheKey) else key
        removed = 0
        for folder in folders:
            names = [digest, digest + DECLINED_SUFFIX] if digest else _names(self._at(folder))
            removed += sum(_unlink(os.path.join(self._at(folder), n), n) for n in names)
        return removed

    def stats(self) -> dict[str, Any]:
        """Return the store's size and entry count (a scan), and this process's counters."""
        files = self._scan()
        entries = [f for f in files if not f.path.endswith(DECLINED_SUFFIX)]
        return {
            "backend": "shared",
            "directory": self.directory,
            "entries": len(entries),
            "bytes": sum(f.size for f in files),
            "max_bytes": self.settings.max_bytes,
            "counted_bytes": self._read_counter(),
            **self.counts,
        }

    def close(self) -> None:
        """Let go of the lock and index files."""
        for locks in (self._fill, self._probe, self._index):
            locks.close()
        os.close(self._index_fd)

    # -- helpers ------------------------------------------------------------------------

    def _path(self, key: CacheKey) -> str:
        return os.path.join(self.entries, _route_folder(key.route), key.digest)

    def _at(self, folder: str) -> str:
        return os.path.join(self.entries, folder)

    def _folders(self) -> list[str]:
        return [name for name in _names(self.entries) if not name.startswith(".")]

    def _declined(self, key: CacheKey) -> bool:
        """Return whether a fresh 'not cacheable' mark stands for ``key``."""
        try:
            return os.stat(self._path(key) + DECLINED_SUFFIX).st_mtime > time.time()
        except OSError:
            return False

    def _write(self, path: str, data: bytes, expires: float) -> None:
        """Write ``data`` to ``path`` atomically, with mtime = ``expires``."""
        try:
            files.replace_file(path, data, mtime=expires, temp_prefix=TEMP_PREFIX)
        except FileNotFoundError:  # the route's folder: made on its first entry
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            files.replace_file(path, data, mtime=expires, temp_prefix=TEMP_PREFIX)

    def _account(self, size: int) -> None:
        """Add ``size`` to the shared count; sweep when it passes ``max_bytes``."""
        self._index.acquire(INDEX_STRIPE)
        try:
            total = self._read_counter() + size
            if total > self.settings.max_bytes:
                total = self._sweep()
            os.pwrite(self._index_fd, _COUNTER.pack(total), 0)
        finally:
            self._index.release(INDEX_STRIPE)

    def _read_counter(self) -> int:
        data = os.pread(self._index_fd, _COUNTER.size, 0)
        return _COUNTER.unpack(data)[0] if len(data) == _COUNTER.size else 0

    def _sweep(self) -> int:
        """Delete expired entries, then the oldest, down to the low-water mark; return the size."""
        now = time.time()
        files = self._scan(now)
        total = sum(f.size for f in files)
        target = self.settings.max_bytes * LOW_WATER
        files.sort(key=lambda f: (f.expires > now, f.changed))  # expired first, then oldest
        evicted = 0
        for file in files:
            if total <= target and file.expires > now:
                break
            if _unlink(file.path, ""):
                total -= file.size
                evicted += 1
        self.counts["sweeps"] += 1
        self.counts["evicted"] += evicted
        return total

    def _scan(self, now: float | None = None) -> list[_File]:
        """Stat every entry (and remove temporary files left by killed writers)."""
        now = time.time() if now is None else now
        found = []
        for folder in self._folders():
            with os.scandir(self._at(folder)) as entries:
                for entry in entries:
                    file = _stat(entry, now)
                    if file is not None:
                        found.append(file)
        return found


def runtime_cache_dir() -> str:
    """Return ``GW_RUNTIME_DIR/cache``; without GW_RUNTIME_DIR, a private directory.

    Warning:
        A private directory is shared by nobody: run gw through its gunicorn.conf.py so that
        every worker of the host shares one store.
    """
    runtime = rundir.runtime_dir()
    if runtime:
        return os.path.join(runtime, CACHE_DIR)
    log.warning("no GW_RUNTIME_DIR: the response cache is private to this process")
    return os.path.join(rundir.private_dir("gw-private-"), CACHE_DIR)


def reset_store(directory: str) -> None:
    """Empty the store (the master, before forking): entries go, the lock file stays.

    The lock file is kept because a worker of the previous generation may hold locks on it;
    a new file would let old and new workers fill the same key at once.
    """
    os.makedirs(directory, mode=0o700, exist_ok=True)
    cache = ResponseCache(CacheStoreSettings(), directory)
    try:
        cache.purge()
        os.pwrite(cache._index_fd, _COUNTER.pack(0), 0)
    finally:
        cache.close()


def _route_folder(route: str) -> str:
    """Return the folder name of a route's entries (a hash: route names are free text)."""
    return sha256(route.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _names(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except FileNotFoundError:
        return []


def _unlink(path: str, name: str) -> int:
    """Delete a file if it is there; return 1 if an entry (not a temp or mark) went."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return 0
    return 0 if name.startswith(TEMP_PREFIX) or name.endswith(DECLINED_SUFFIX) else 1


def _stat(entry: os.DirEntry[str], now: float) -> _File | None:
    """Describe one file of the store; delete a temporary file older than a minute."""
    try:
        info = entry.stat(follow_symlinks=False)
    except FileNotFoundError:
        return None
    if entry.name.startswith(TEMP_PREFIX):
        if info.st_ctime < now - STALE_TEMP_SECONDS:
            _unlink(entry.path, entry.name)
        return None
    return _File(entry.path, info.st_size, info.st_mtime, info.st_ctime)
