"""prometheus_client's per-process files: blocks allocated up front, dead workers' compacted.

Allocation: prometheus_client makes each worker's ``<type>_<pid>.db`` sparse (``truncate``
to 64 KiB, doubled by ``truncate`` when it fills) and maps it. On a full tmpfs a store
into a page without a block behind it kills the worker with SIGBUS. ``allocate_files()``
makes it use ``_AllocatedMmapedDict``, which allocates the blocks (``posix_fallocate``)
before the file is created or grown, so a full directory fails that call with OSError
(ENOSPC), which ``gw.observe.instruments`` turns into "this worker serves without its metrics".

Compaction: a dead worker's counters and histograms must stay in the totals, but one file
per dead worker makes every scrape slower (104 restarts left 214 files; the scrape went
from 7 ms to 53 ms). ``compact()`` (the master, from ``child_exit``) sums the files of
dead workers into ``<type>_archive.db`` and removes them. A scrape reads the directory
under a shared ``flock`` on ``compaction.lock`` (``scrape_lock()``) and the compaction
holds it exclusively while it writes the new archive, renames it over the old one and
deletes the merged files: a scrape sees either the files before or the archive after,
never both and never neither. Gauges are left alone: gw's gauges are ``live*``, whose
dead-worker files ``mark_process_dead`` deletes.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import values
from prometheus_client.mmap_dict import MmapedDict

log = logging.getLogger("gw")

ARCHIVE = "archive"
LOCK_FILE = "compaction.lock"  # not *.db: prometheus_client never reads it
COMPACTED_TYPES = ("counter", "histogram", "summary")
LOCK_DEADLINE = 2.0
_INITIAL_SIZE = 1 << 16  # prometheus_client's _INITIAL_MMAP_SIZE
_ENTRY_OVERHEAD = 4 + 16  # length prefix, then value and timestamp doubles


class _AllocatedMmapedDict(MmapedDict):
    """prometheus_client's MmapedDict, with every block allocated before it is mapped."""

    def __init__(self, filename: str, read_mode: bool = False) -> None:
        if not read_mode:
            _allocate_new(filename)
        super().__init__(filename, read_mode)  # type: ignore[no-untyped-call]

    def _init_value(self, key: str) -> None:
        encoded = len(key.encode("utf-8"))
        size = _ENTRY_OVERHEAD + encoded + (8 - (encoded + 4) % 8)
        capacity = self._capacity
        while self._used + size > capacity:
            capacity *= 2  # how the parent grows it: allocate what it is about to map
        if capacity != self._capacity:
            os.posix_fallocate(self._f.fileno(), 0, capacity)
        super()._init_value(key)  # type: ignore[no-untyped-call]


def allocate_files() -> None:
    """Make this process's prometheus_client allocate its files' blocks (idempotent).

    Call before the first metric is made. prometheus_client looks ``MmapedDict`` up in
    ``prometheus_client.values`` each time it opens a file; this is the seam.
    """
    values.MmapedDict = _AllocatedMmapedDict  # type: ignore[attr-defined]


def _allocate_new(filename: str) -> None:
    """Make ``filename`` exist with its first 64 KiB allocated, never visible empty.

    A scrape lists the directory and reads every ``*.db`` file; an empty one has no header
    and fails the whole scrape. The file is made under a name no scrape reads, allocated,
    then linked into place (``link`` fails rather than replace a file that is there).
    """
    if os.path.exists(filename):
        return
    temp = f"{filename}.{os.getpid()}.new"  # not *.db: never scraped
    fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        os.posix_fallocate(fd, 0, _INITIAL_SIZE)
        with contextlib.suppress(FileExistsError):
            os.link(temp, filename)
    finally:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


@contextlib.contextmanager
def scrape_lock(directory: str) -> Iterator[None]:
    """Hold the directory's shared lock: no compaction runs while the files are read."""
    with _flock(directory, fcntl.LOCK_SH) as held:
        if not held:
            raise TimeoutError(f"metrics files of {directory} are being compacted")
        yield


def compact(directory: str, dead_pid: int) -> int:
    """Merge the counters and histograms of ``dead_pid`` (and of any other process that is
    gone) into the archive files; return how many files were merged.

    Called by the master from ``child_exit``, after the worker was reaped.
    """
    with _flock(directory, fcntl.LOCK_EX) as held:
        if not held:
            log.warning("metrics: compaction skipped, the directory stayed locked")
            return 0
        return sum(_compact_type(directory, typ, dead_pid) for typ in COMPACTED_TYPES)


def _compact_type(directory: str, typ: str, dead_pid: int) -> int:
    dead = [path for path in _files(directory, typ) if _is_dead(path, dead_pid)]
    if not dead:
        return 0
    archive = os.path.join(directory, f"{typ}_{ARCHIVE}.db")
    totals = _sum_values([archive, *dead] if os.path.exists(archive) else dead)
    temp = os.path.join(directory, f"{typ}_{ARCHIVE}.tmp")  # not *.db: never scraped
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp)
    try:
        _write_archive(temp, totals)
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    os.replace(temp, archive)
    for path in dead:
        os.unlink(path)
    return len(dead)


def _files(directory: str, typ: str) -> list[str]:
    return glob.glob(os.path.join(glob.escape(directory), f"{typ}_*.db"))


def _is_dead(path: str, dead_pid: int) -> bool:
    """Whether ``<type>_<pid>.db`` belongs to a process that is gone."""
    tail = os.path.basename(path).rsplit("_", 1)[-1][: -len(".db")]
    if not tail.isdigit():
        return False  # the archive itself
    pid = int(tail)
    if pid == dead_pid:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _sum_values(paths: list[str]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for path in paths:
        if os.path.getsize(path) == 0:
            continue  # a worker killed between creating its file and sizing it: no counts
        entries: Any = MmapedDict.read_all_values_from_file(path)  # type: ignore[no-untyped-call]
        for key, value, _timestamp, _pos in entries:
            totals[key] = totals.get(key, 0.0) + value
    return totals


def _write_archive(path: str, totals: dict[str, float]) -> None:
    archive = _AllocatedMmapedDict(path)
    try:
        for key, value in totals.items():
            archive.write_value(key, value, 0.0)  # type: ignore[no-untyped-call]
    finally:
        archive.close()  # type: ignore[no-untyped-call]


@contextlib.contextmanager
def _flock(directory: str, mode: int) -> Iterator[bool]:
    """Take an ``flock`` on the directory's lock file, polling until ``LOCK_DEADLINE``.

    Bounded on purpose: a stopped scraper must not hang the master, nor a stuck master
    a scrape.
    """
    path = os.path.join(directory, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        yield _poll_flock(fd, mode)
    finally:
        os.close(fd)  # drops the lock


def _poll_flock(fd: int, mode: int) -> bool:
    deadline = time.monotonic() + LOCK_DEADLINE
    pause = 0.0005
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
        time.sleep(pause)
        pause = min(pause * 2, 0.02)
