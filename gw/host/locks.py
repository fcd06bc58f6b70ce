"""Striped locks that exclude every thread of every process of a host, with a deadline.

One stripe is held through two locks taken in order: a lock of the OS threads (record locks
belong to the process, so without it two threads of a gthread worker, or two greenlets of a
gevent one, would both "hold" the stripe) and then an ``fcntl`` record lock on byte
``stripe`` of a lock file. Both are taken with a deadline, and both, when taken, are polled
rather than waited for (see ``_thread_locks``); missing the deadline raises ``LockTimeout``.
Each feature translates these errors into its own (the rate limiter into
``LimiterUnavailable``).

A stopped holder is told apart from a busy one. When the record lock is busy, the kernel
names its holder (``F_GETLK`` gives the pid) and ``/proc/<pid>/stat`` gives that process's
state: ``T`` (stopped: SIGSTOP), ``t`` (stopped by a debugger), or, for ``D``/``S``, a
frozen cgroup (``docker pause``, ``systemctl freeze``: the cgroup's freezer state). Such a
holder may be in the middle of a read-modify-write of a slot, and will finish it, with
what it read, when it goes on; so nobody may write under its lock, and nobody may take the
lock from it (nginx's shared-memory mutex, likewise, is only forced from dead owners:
``ngx_shmtx_force_unlock``). Admitting without deciding is not exact either: it is how a
frozen worker let 402 requests past a limit in 3 s. So once the holder has stayed stopped
for ``FROZEN_AFTER`` of a wait, the waiter raises ``StripeFrozen`` (and at its deadline,
however briefly it saw it stopped), and callers refuse the request. Only that stripe is
refused (1/stripes of the keys), within ``FROZEN_AFTER``, until the holder goes on (SIGCONT)
or dies (the kernel drops its locks).

A holder stopped for a moment is waited for like a running one: a sampling profiler
(py-spy, 100-200 samples a second) or ``strace`` stops the process it reads for well under a
millisecond, and the stripe comes free as soon as the holder runs again. Refusing at the
first sight of a stopped holder answered 503 to 3 of 113,000 requests of a bench run while
py-spy sampled one worker.

What remains for a caller's fail-open rule: a running holder slower than the deadline (an
overloaded host), an unreadable lock file, and the other errors of the backend (a full
table, a Redis outage).

Within a process, every ``StripeLocks`` on the same lock file shares one descriptor and one
set of thread locks (see ``_LockFile``): two handles with their own thread locks would let
two threads of one process into a stripe at once, since the process already "owns" the
record lock.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from gw.host import process

DEFAULT_DEADLINE = 0.05
# How long a waiter must see the holder stopped before it refuses (see the module docstring).
FROZEN_AFTER = 0.01
_FROZEN_MEMORY = 1.0  # seconds a refusal for a stopped holder holds for this process's waits
_BUSY = (errno.EACCES, errno.EAGAIN)
# Polling pauses while another process holds a stripe: short first (a holder keeps it for
# microseconds), growing so that a stuck holder costs little CPU until the deadline.
_FIRST_PAUSE = 0.00002
_LONGEST_PAUSE = 0.001
# struct flock on Linux (x86_64, aarch64): short l_type, short l_whence, off_t l_start,
# off_t l_len, pid_t l_pid, then padding to 32 bytes. Elsewhere the holder is not asked.
_FLOCK = struct.Struct("hhqqixxxx") if sys.platform.startswith("linux") else None
_STOPPED_STATES = (b"T", b"t")
_Stopped = tuple[int, float]  # a stopped holder's pid, and when a waiter first saw it so
_CGROUP_ROOT = "/sys/fs/cgroup"
_CGROUP2_ROOTS = (_CGROUP_ROOT, _CGROUP_ROOT + "/unified")  # unified: hybrid hierarchies


class LockUnavailable(RuntimeError):
    """A stripe could not be taken (the lock file refused the lock); nothing is held.

    The root of this module's errors: catch it to treat every failure alike.
    """


class LockTimeout(LockUnavailable):
    """The stripe was not free within the deadline (a busy, running holder)."""


class StripeFrozen(LockUnavailable):
    """The stripe's lock is held by a stopped process (SIGSTOP, a debugger, a frozen cgroup).

    Warning:
        Nobody may write under that lock until its holder goes on or dies: a caller must
        refuse what the stripe protects, not carry on without it (see the module docstring).
    """


class _LockFile:
    """One process's open descriptor of a lock file, and the thread locks of its stripes.

    APPSEC: the cross-process lock is an ``fcntl`` record lock because the kernel drops it
    when its holder dies. gunicorn SIGKILLs workers that time out; a POSIX semaphore or a
    ``multiprocessing.Lock`` held by such a worker stays locked forever and the limiter of
    the whole host wedges. Record locks have one trap: closing *any* descriptor of the file
    drops all of the process's locks on it. Hence a separate lock file (never the mmap'd
    data file, whose descriptor ``mmap`` duplicates and closes on its own), one descriptor
    per process shared by every handle, closed only when the last handle goes.
    """

    def __init__(self, fd: int, identity: tuple[int, int], stripes: int) -> None:
        self.fd = fd
        self.identity = identity
        self.stripes = stripes
        self.threads = _thread_locks(stripes)
        # Stripes whose holder a wait of this process found stopped for ``frozen_after``: by
        # stripe, the holder's pid and when a wait last refused for it. A wait within
        # ``_FROZEN_MEMORY`` of that refuses at once while that pid holds the stripe stopped,
        # so that the waiters of the stripe's thread lock do not each watch it again.
        self.frozen: dict[int, _Stopped] = {}
        self.users = 0


_FILES: dict[tuple[int, int], _LockFile] = {}
_FILES_LOCK = threading.Lock()
_PARKED: list[int] = []  # descriptors that must stay open (see _share)


class StripeLocks:
    """A handle on the striped locks of one lock file, with its own deadline."""

    def __init__(
        self,
        path: str,
        stripes: int,
        deadline: float = DEFAULT_DEADLINE,
        frozen_after: float = FROZEN_AFTER,
    ) -> None:
        if stripes < 1:
            raise ValueError(f"stripes must be at least 1, got {stripes}")
        if deadline <= 0:
            raise ValueError(f"deadline must be positive, got {deadline}")
        self._file: _LockFile | None = _share(path, stripes)
        self.fd = self._file.fd
        self.stripes = stripes
        self.deadline = deadline
        self.frozen_after = frozen_after
        self._threads = self._file.threads  # renewed in place after a fork
        self._frozen = self._file.frozen

    @property
    def threads(self) -> list[Any]:
        """The stripes' thread locks (renewed in place after a fork), for a compiled caller
        that takes a stripe only as ``acquire`` does when both locks are free at once
        (gw/limits/_table.c): the thread lock, then the record lock."""
        return self._threads

    @property
    def frozen(self) -> dict[int, _Stopped]:
        """The stripes whose holder a wait found stopped (see ``acquire``): a caller that
        takes a stripe itself drops it from here, as ``acquire`` does."""
        return self._frozen

    def acquire(self, stripe: int) -> None:
        """Take ``stripe`` for this thread.

        Raises:
            LockTimeout: the deadline passed.
            StripeFrozen: a process that stays stopped holds the stripe.
            LockUnavailable: the lock file refused the lock.
        """
        tlock = self._threads[stripe]
        # PERF: the uncontended path is one non-blocking attempt per lock, with no clock
        # read and no deadline arithmetic.
        if tlock.acquire(False):
            deadline = 0.0
        else:
            deadline = time.monotonic() + self.deadline
            if not _poll_thread_lock(tlock, deadline):
                self._watch_stopped(stripe, None, 0.0)  # our thread holding it may wait on one
                raise LockTimeout("lock deadline passed (thread)")
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, stripe)
        except OSError as ex:
            self._wait_for_file(stripe, ex, deadline)
        if self._frozen:  # the stripe came free: its holder went on or died
            self._frozen.pop(stripe, None)

    def release(self, stripe: int) -> None:
        """Give ``stripe`` back (the caller must hold it)."""
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, stripe)
        finally:
            self._threads[stripe].release()

    def close(self) -> None:
        """Let go of the lock file; the last handle of the process closes it."""
        if self._file is not None:
            _unshare(self._file)
            self._file = None
            self.fd = -1

    def _wait_for_file(self, stripe: int, first: OSError, deadline: float) -> None:
        """Poll the record lock until it is ours; on failure give the thread lock back."""
        try:
            if first.errno not in _BUSY:
                raise LockUnavailable(f"lock failed: {first}") from first
            # PERF: only a contended stripe pays for asking (one fcntl, one read of /proc).
            stopped = self._watch_stopped(stripe, None, self.frozen_after)
            self._poll_file(stripe, deadline or time.monotonic() + self.deadline, stopped)
        except BaseException:
            self._threads[stripe].release()
            raise

    def _poll_file(self, stripe: int, deadline: float, stopped: _Stopped | None) -> None:
        """Retry the non-blocking record lock with growing pauses until ``deadline``;
        ``stopped``: the holder seen stopped, and since when."""
        for pause in _pauses():
            time.sleep(pause)
            try:
                fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, stripe)
                return
            except OSError as ex:
                if ex.errno not in _BUSY:
                    raise LockUnavailable(f"lock failed: {ex}") from ex
            if time.monotonic() >= deadline:
                # At the deadline a stopped holder is refused however briefly it was seen so:
                # a frozen holder is never failed open.
                self._watch_stopped(stripe, stopped, 0.0)
                raise LockTimeout("lock deadline passed (process)")
            if stopped is not None or pause >= _LONGEST_PAUSE:
                stopped = self._watch_stopped(stripe, stopped, self.frozen_after)

    def _watch_stopped(
        self, stripe: int, stopped: _Stopped | None, patience: float
    ) -> _Stopped | None:
        """The holder of ``stripe`` if it is stopped now, with when this wait first saw it
        stopped (None: running, or gone).

        Raises:
            StripeFrozen: it has been seen stopped for ``patience`` seconds, or a wait of
                this process refused for it in the last ``_FROZEN_MEMORY`` seconds.
        """
        holder = holder_pid(self.fd, stripe)
        if not holder or not _is_stopped(holder):
            self._frozen.pop(stripe, None)
            return None
        now = time.monotonic()
        if stopped is None or stopped[0] != holder:
            stopped = (holder, now)
        known = self._frozen.get(stripe)
        recently_refused = (
            known is not None and known[0] == holder and now - known[1] < _FROZEN_MEMORY
        )
        if recently_refused or now - stopped[1] >= patience:
            self._frozen[stripe] = (holder, now)
            raise StripeFrozen(f"stripe {stripe} held by stopped process {holder}")
        return stopped


def _thread_locks(stripes: int) -> list[Any]:
    """One lock of the OS threads per stripe, never gevent's (``gw.host.process``).

    PERF: in a gevent worker ``threading.Lock`` is gevent's, whose ``acquire`` and ``release``
    are Python code (0.7 against 0.16 µs here, once per rate-limited request). A native lock
    must never be waited for by blocking, though: the greenlet that holds a stripe may be
    parked in ``time.sleep`` waiting for another process's record lock, and a blocked OS
    thread would never run it again. So a taken one is polled (``_poll_thread_lock``).
    """
    return [process.native_lock() for _ in range(stripes)]


def _poll_thread_lock(tlock: Any, deadline: float) -> bool:
    """Retry ``tlock`` with growing pauses (which let the holder's greenlet or thread run)
    until it is ours (True) or ``deadline`` passes (False)."""
    for pause in _pauses():
        time.sleep(pause)
        if tlock.acquire(False):
            return True
        if time.monotonic() >= deadline:
            break
    return False


def _pauses() -> Iterator[float]:
    """The pauses between two tries of a taken lock: doubling from ``_FIRST_PAUSE`` up to
    ``_LONGEST_PAUSE``, then that one for ever (each caller stops at its deadline)."""
    pause = _FIRST_PAUSE
    while True:
        yield pause
        pause = min(pause * 2, _LONGEST_PAUSE)


def holder_pid(fd: int, stripe: int) -> int:
    """Return the pid of the process holding a record lock on byte ``stripe``, or 0."""
    if _FLOCK is None:
        return 0
    query = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, stripe, 1, 0)
    try:
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
    except OSError:
        return 0
    l_type, _, _, _, pid = _FLOCK.unpack(answer)
    return 0 if l_type == fcntl.F_UNLCK else int(pid)


def _is_stopped(pid: int) -> bool:
    """Whether ``pid`` is stopped (``T``), stopped by a tracer (``t``) or in a frozen cgroup."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # The command name in parentheses may hold spaces and parentheses: the state
            # is the first field after the last ')'.
            fields = stat.read().rsplit(b")", 1)[-1].split()
    except OSError:
        return False  # gone (its locks are gone too), or no /proc: treat as busy
    if not fields:
        return False
    # A frozen cgroup's tasks show as D (cgroup v1 freezer) or S (v2), never as T.
    return fields[0] in _STOPPED_STATES or (fields[0] in (b"D", b"S") and _in_frozen_cgroup(pid))


def _in_frozen_cgroup(pid: int) -> bool:
    """Whether ``pid``'s cgroup is frozen (``docker pause``, ``systemctl freeze``)."""
    try:
        with open(f"/proc/{pid}/cgroup") as cgroups:
            lines = cgroups.read().splitlines()
    except OSError:
        return False
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "freezer":
            if _read(f"{_CGROUP_ROOT}/freezer{path}/freezer.state").strip() == "FROZEN":
                return True
        elif controllers == "":
            for root in _CGROUP2_ROOTS:
                if "frozen 1" in _read(f"{root}{path}/cgroup.events").splitlines():
                    return True
    return False


def _read(path: str) -> str:
    try:
        with open(path) as file:
            return file.read()
    except OSError:
        return ""


def _share(path: str, stripes: int) -> _LockFile:
    """Return this process's _LockFile for ``path``, opening it if no handle has yet."""
    with _FILES_LOCK:
        lock_file = _registered(path) or _register(path, stripes)
        if lock_file.stripes != stripes:
            raise ValueError(f"{path} is in use with {lock_file.stripes} stripes, not {stripes}")
        lock_file.users += 1
        return lock_file


def _registered(path: str) -> _LockFile | None:
    """Return the _LockFile already open for the file at ``path``, if any."""
    try:
        info = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return _FILES.get((info.st_dev, info.st_ino))


def _register(path: str, stripes: int) -> _LockFile:
    """Open ``path`` (never through a symlink) and register it for this process."""
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    info = os.fstat(fd)
    identity = (info.st_dev, info.st_ino)
    if identity in _FILES:
        # The path changed between stat and open, to a file already in use here. Closing
        # this descriptor would drop the record locks other threads hold on it: keep it.
        _PARKED.append(fd)
        return _FILES[identity]
    _FILES[identity] = _LockFile(fd, identity, stripes)
    return _FILES[identity]


def _unshare(lock_file: _LockFile) -> None:
    """Drop one user of ``lock_file``; close it when none is left."""
    with _FILES_LOCK:
        lock_file.users -= 1
        if lock_file.users == 0:
            del _FILES[lock_file.identity]
            os.close(lock_file.fd)


def _renew_after_fork() -> None:
    """Replace every thread lock in a freshly forked child."""
    global _FILES_LOCK
    _FILES_LOCK = threading.Lock()
    for lock_file in _FILES.values():
        lock_file.threads[:] = _thread_locks(lock_file.stripes)
        lock_file.frozen.clear()


# APPSEC: a thread lock copied into a child while another parent thread held it would stay
# locked forever in the child; record locks are never inherited, so only these need renewal.
os.register_at_fork(after_in_child=_renew_after_fork)
