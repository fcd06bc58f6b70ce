"""The host-wide table of upstream health: one mmap'd file every worker reads and writes.

Lifecycle: the gunicorn master calls ``create(path, upstream_targets)`` once before forking
(``path`` is ``GW_RUNTIME_DIR/health.table``); each worker opens it lazily after the fork
through ``shared()`` (a pid check reopens it in a new process). The operator's tools read it
from any process with ``snapshot()``.

Layout (native byte order: the file never leaves its host), all fields int64 words:

    0      header: magic, layout version, target slots, upstream slots, rows, stripes, salt
    64     target slots, TARGET_WORDS each: key, outstanding, passive and active state, counts
    ...    upstream slots, UPSTREAM_WORDS each: key, breaker state, rolling window buckets
    ...    process rows: pid, start time, then one outstanding count per target slot
    ...    names: NAME_BYTES per slot ("upstream\\0url" or "upstream"), for the operator

A slot is found by the salted blake2b-8 hash of its name, by linear probing over its region.
Slots are claimed on first use, so targets that appear after a reload just take a new slot;
a slot never becomes empty again (when a region is full, the idle slot used longest ago is
re-keyed), which keeps lookups that stop at an empty slot sound. Every change to a slot is
made under its stripe's lock (``StripeLocks``: a thread lock and an ``fcntl`` record lock,
which the kernel drops when a SIGKILLed worker held it). Reads for a pick take no lock: each
word is one aligned 8-byte load, so a reader sees a value that was written, maybe a moment old.

Requests in flight (kept only for least_outstanding upstreams: it costs a lock at each end of
a request) and dead workers: each process claims a row and counts, besides the target's
total, its own share in that row, both under the same lock. When a worker dies
(gunicorn SIGKILLs one that times out, mid-request), whoever next sees it dead (every new
worker on opening, and the active-check leader every round) zeroes its row and recomputes the
totals it touched from the live rows. So a total never leaks, and it is exact, not a decaying
guess: a decay would also shrink the counts of long requests that are still running.
"""

from __future__ import annotations

import hashlib
import logging
import mmap
import os
import secrets
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Self

from gw.health import HealthTableError, HealthUnavailable
from gw.host import files, rundir
from gw.host.locks import LockUnavailable, StripeLocks

log = logging.getLogger("gw.health")

__all__ = ["HealthTable", "Slot", "create", "default_path", "register", "shared", "snapshot"]

MAGIC = b"GWHLTAB\x00"
LOCK_MAGIC = b"GWHLLCK\x00"
LAYOUT_VERSION = 1
TABLE_FILE = "health.table"
DEFAULT_TARGETS = 1024
DEFAULT_UPSTREAMS = 256
DEFAULT_ROWS = 256
DEFAULT_STRIPES = 16
DEFAULT_DEADLINE = 0.05
NAME_BYTES = 256

# Target slot fields (word offsets from the slot's base).
KEY = 0
OUTSTANDING = 1  # kept by least_outstanding balancers only
FAILS = 2  # consecutive passive failures
EJECTED_UNTIL = 3  # ns; 0 = in service; in the past = waiting for its half-open probe
EJECTIONS = 4  # ejections in a row (the cooldown doubles with each)
PROBE_UNTIL = 5  # ns until which one request holds the half-open probe
RESTORED_AT = 6  # ns of the last successful probe
ACTIVE_DOWN = 7  # 1 while active checks say the target is down
ACTIVE_STREAK = 8  # > 0 successful checks in a row, < 0 failed ones
ACTIVE_AT = 9  # ns of the last active check
ACTIVE_STATUS = 10  # HTTP status of the last check, or a CHECK_* code below
# 11: reserved
FAILURES = 12
EJECTED_TOTAL = 13
LAST_USED = 14
TARGET_WORDS = 16

# Upstream slot fields.
BREAKER = 1  # CLOSED, OPEN or HALF_OPEN
OPEN_UNTIL = 2
TRIALS = 3
TRIAL_OKS = 4
TRIPS = 5
HALF_OPEN_SINCE = 6
UPSTREAM_USED = 7
BUCKET_NS = 8  # the width of a window bucket, so that any process can read the window
BUCKETS_AT = 9  # BUCKETS x (epoch, requests, failures)
BUCKETS = 8
UPSTREAM_WORDS = 40

CLOSED, OPEN, HALF_OPEN = 0, 1, 2
BREAKER_STATES = ("closed", "open", "half_open")
CHECK_REFUSED, CHECK_TIMEOUT, CHECK_ERROR = -1, -2, -3

_HEADER = struct.Struct("@8sIIIII4x16s")
_FIRST_WORD = 8
_ROW_HEAD = 2  # pid, start time
_OPEN_ATTEMPTS = 5


class Slot:
    """Where one target's (or one upstream's) state lives; rebound if the slot is re-keyed."""

    __slots__ = ("base", "index", "key", "name", "stripe", "targets")

    def __init__(self, name: str, key: int, index: int, base: int, stripe: int, targets: bool):
        self.name = name
        self.key = key
        self.index = index
        self.base = base
        self.stripe = stripe
        self.targets = targets


class _Layout:
    """Where each region of a table file of a given shape lives (in words, names in bytes)."""

    def __init__(self, targets: int, upstreams: int, rows: int, stripes: int) -> None:
        self.targets, self.upstreams, self.rows, self.stripes = targets, upstreams, rows, stripes
        self.targets_at = _FIRST_WORD
        self.upstreams_at = self.targets_at + targets * TARGET_WORDS
        self.row_words = _ROW_HEAD + targets
        self.rows_at = self.upstreams_at + upstreams * UPSTREAM_WORDS
        self.names_at = 8 * (self.rows_at + rows * self.row_words)
        self.size = self.names_at + NAME_BYTES * (targets + upstreams)

    def region(self, targets: bool) -> tuple[int, int, int]:
        """Return the first word, slot count and slot width of one region."""
        if targets:
            return self.targets_at, self.targets, TARGET_WORDS
        return self.upstreams_at, self.upstreams, UPSTREAM_WORDS


class HealthTable:
    """A process's handle on the host's health table. Thread-safe; open one per process."""

    def __init__(
        self,
        path: str,
        mapped: tuple[_Layout, mmap.mmap, bytes],
        locks: StripeLocks | None,
        clock: Callable[[], int] | None,
    ) -> None:
        self.path = path
        self.layout, self._map, self._salt = mapped
        self.words = memoryview(self._map).cast("q")
        self._locks = locks
        self.now: Callable[[], int] = clock or time.monotonic_ns
        self.pid = os.getpid()
        self.row = -1
        self._slots: dict[tuple[bool, str], Slot] = {}
        self._slots_lock = threading.Lock()

    @classmethod
    def open(
        cls,
        path: str,
        *,
        deadline: float = DEFAULT_DEADLINE,
        clock: Callable[[], int] | None = None,
        attach: bool = True,
    ) -> HealthTable:
        """Open the table a master created; raise HealthTableError if it is not one.

        Args:
            path: the file given to ``create``.
            deadline: seconds an update may wait for its stripe lock.
            clock: nanoseconds on a clock every process shares (tests inject one).
            attach: claim a process row, as a worker must; ``False`` opens a read-only view
                for the operator's tools (no locks, no updates).
        """
        for _ in range(_OPEN_ATTEMPTS):
            mapped = layout, data, salt = _map_file(path, writable=attach)
            if not attach:
                return cls(path, mapped, None, clock)
            locks = _open_locks(path + ".lock", layout, deadline, data)
            if files.lock_salt(locks.fd, LOCK_MAGIC) == salt:
                table = cls(path, mapped, locks, clock)
                table._claim_row()
                return table
            locks.close()  # the master is replacing the files: try again
            data.close()
            time.sleep(0.01)
        raise HealthTableError(f"{path}.lock does not belong to {path}")

    def target(self, upstream: str, url: str) -> Slot:
        """Return the slot of ``url`` in ``upstream``, claiming one if it is new."""
        return self._slot(True, f"{upstream}\0{url}")

    def upstream(self, name: str) -> Slot:
        """Return the slot of upstream ``name`` (its circuit breaker), claiming one if new."""
        return self._slot(False, name)

    def enter(self, slot: Slot) -> int:
        """Lock ``slot`` for this thread and return its base word (rebinding a re-keyed slot).

        Raises:
            HealthUnavailable: the lock was not free within the deadline.
        """
        locks = self._writable()
        while True:
            base, stripe = slot.base, slot.stripe
            _take(locks, stripe)
            if self.words[base + KEY] == slot.key:
                return base
            locks.release(stripe)
            self._rebind(slot)

    def leave(self, slot: Slot) -> None:
        """Unlock ``slot`` (the caller must hold it)."""
        self._writable().release(slot.stripe)

    @contextmanager
    def held(self, slot: Slot) -> Iterator[int]:
        """Hold ``slot`` for a ``with`` block; yield its base word."""
        base = self.enter(slot)
        try:
            yield base
        finally:
            self.leave(slot)

    def add_outstanding(self, slot: Slot, base: int, delta: int) -> None:
        """Count ``delta`` requests in flight to ``slot`` (the caller holds its lock)."""
        if self.row < 0:
            return  # no row, no count: a count nobody could clean up after us would leak
        words = self.words
        share = self.layout.rows_at + self.row * self.layout.row_words + _ROW_HEAD + slot.index
        if delta < 0 and words[share] + delta < 0:
            return  # counted before a reap of this process's row: nothing left to give back
        words[share] += delta
        words[base + OUTSTANDING] = max(0, words[base + OUTSTANDING] + delta)

    def breaker_state(self, upstream: str) -> str:
        """Return ``closed``, ``open`` or ``half_open`` for ``upstream`` (any process)."""
        base = self._find(False, _name_key(self._salt, upstream))
        if base < 0:
            return "closed"
        return _breaker_state(self.words, base, self.now())

    def reap(self) -> int:
        """Free the rows of processes that died; recount the totals they held. Return how many."""
        dead = [r for r in range(self.layout.rows) if self._row_pid(r) and not self._live(r)]
        if not dead:
            return 0
        with self._meta():
            dead = [r for r in dead if self._row_pid(r) and not self._live(r)]
            self._free_rows(dead)
        if dead:
            log.info("health table: freed the rows of %d dead process(es)", len(dead))
        return len(dead)

    def entries(self) -> Iterator[tuple[bool, str, int]]:
        """Yield ``(is_target, name, base)`` for every used slot (a lock-free snapshot)."""
        for targets in (True, False):
            first, count, width = self.layout.region(targets)
            for i in range(count):
                base = first + i * width
                if self.words[base + KEY]:
                    yield targets, self._name(targets, i), base

    def close(self) -> None:
        """Give back this process's row and release the mapping and the lock file."""
        if self._locks is not None and self.row >= 0 and self.pid == os.getpid():
            with self._meta():
                self._free_rows([self.row])
            self.row = -1
        self.words.release()
        self._map.close()
        if self._locks is not None:
            self._locks.close()
            self._locks = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _writable(self) -> StripeLocks:
        if self._locks is None:
            raise HealthUnavailable(f"{self.path} is open read-only")
        return self._locks

    def _slot(self, targets: bool, name: str) -> Slot:
        """Return the cached slot of ``name``, resolving it the first time."""
        slot = self._slots.get((targets, name))
        if slot is None:
            with self._slots_lock:
                slot = self._slots.get((targets, name)) or self._new_slot(targets, name)
                self._slots[(targets, name)] = slot
        return slot

    def _new_slot(self, targets: bool, name: str) -> Slot:
        key = _name_key(self._salt, name)
        slot = Slot(name, key, 0, 0, 0, targets)
        self._rebind(slot)
        return slot

    def _rebind(self, slot: Slot) -> None:
        """Point ``slot`` at the slot holding its key, claiming one if there is none."""
        base = self._find(slot.targets, slot.key)
        if base < 0:
            with self._meta():
                base = self._find(slot.targets, slot.key)
                if base < 0:
                    base = self._claim(slot)
        first, _, width = self.layout.region(slot.targets)
        slot.index = (base - first) // width
        slot.base = base
        slot.stripe = slot.index % self.layout.stripes

    def _probe(self, targets: bool, key: int) -> Iterator[int]:
        """Yield the base words of the slots ``key`` may occupy, in probing order."""
        first, count, width = self.layout.region(targets)
        home = key % count
        for i in range(count):
            yield first + ((home + i) % count) * width

    def _find(self, targets: bool, key: int) -> int:
        """Return the base word of ``key``'s slot, or -1."""
        for base in self._probe(targets, key):
            held = self.words[base + KEY]
            if held == key:
                return base
            if held == 0:
                break
        return -1

    def _claim(self, slot: Slot) -> int:
        """Take an empty slot (or re-key the idle one used longest ago) for ``slot``.

        Called under the meta lock, which every claim takes, so two processes never claim
        the same empty slot.
        """
        base = next((b for b in self._probe(slot.targets, slot.key) if not self.words[b]), -1)
        if base < 0:
            base = self._reclaim(slot.targets)
        first, _, width = self.layout.region(slot.targets)
        self._write_name(slot.targets, (base - first) // width, slot.name)
        self.words[base + (LAST_USED if slot.targets else UPSTREAM_USED)] = self.now()
        self.words[base + KEY] = slot.key  # last: the slot is found only once it is whole
        return base

    def _reclaim(self, targets: bool) -> int:
        """Re-key the slot idle longest (none in flight): the region is full."""
        first, count, width = self.layout.region(targets)
        used = LAST_USED if targets else UPSTREAM_USED
        bases = [first + i * width for i in range(count)]
        idle = [b for b in bases if not targets or self.words[b + OUTSTANDING] == 0]
        if not idle:
            raise HealthUnavailable(f"{self.path}: every target slot has requests in flight")
        base = min(idle, key=lambda b: self.words[b + used])
        log.warning(
            "health table full: reusing the slot of %r",
            self._name(targets, (base - first) // width),
        )
        stripe = ((base - first) // width) % self.layout.stripes
        with _stripe(self._writable(), stripe):
            self.words[base : base + width] = memoryview(bytes(8 * width)).cast("q")
        return base

    @contextmanager
    def _meta(self) -> Iterator[None]:
        """Hold the meta stripe (slot claims, row claims and reaping)."""
        with _stripe(self._writable(), self.layout.stripes):
            yield

    def _claim_row(self) -> None:
        """Claim a free process row, freeing those of dead processes first."""
        self.reap()
        start = _start_time(self.pid) or 0
        with self._meta():
            for r in range(self.layout.rows):
                at = self.layout.rows_at + r * self.layout.row_words
                if self.words[at] == 0:
                    self.words[at + 1] = start
                    self.words[at] = self.pid
                    self.row = r
                    return
        log.warning("health table: no free process row; this worker's requests go uncounted")

    def _row_pid(self, row: int) -> int:
        return self.words[self.layout.rows_at + row * self.layout.row_words]

    def _live(self, row: int) -> bool:
        """Tell whether the process that claimed ``row`` still runs (and is not a zombie)."""
        at = self.layout.rows_at + row * self.layout.row_words
        return _start_time(self.words[at]) == self.words[at + 1]

    def _free_rows(self, rows: list[int]) -> None:
        """Zero ``rows`` and recompute the totals they held from the remaining rows."""
        layout, words = self.layout, self.words
        heads = [layout.rows_at + r * layout.row_words + _ROW_HEAD for r in rows]
        touched = {i for h in heads for i in range(layout.targets) if words[h + i]}
        all_heads = [layout.rows_at + r * layout.row_words + _ROW_HEAD for r in range(layout.rows)]
        for i in sorted(touched):
            base = layout.targets_at + i * TARGET_WORDS
            with _stripe(self._writable(), i % layout.stripes):
                for h in heads:
                    words[h + i] = 0
                words[base + OUTSTANDING] = sum(words[h + i] for h in all_heads)
        for r in rows:
            at = layout.rows_at + r * layout.row_words
            words[at] = words[at + 1] = 0

    def _name(self, targets: bool, index: int) -> str:
        at = self.layout.names_at + NAME_BYTES * (index + (0 if targets else self.layout.targets))
        raw = self._map[at : at + NAME_BYTES].rstrip(b"\0")
        return raw.decode("utf-8", "replace")

    def _write_name(self, targets: bool, index: int, name: str) -> None:
        at = self.layout.names_at + NAME_BYTES * (index + (0 if targets else self.layout.targets))
        raw = name.encode("utf-8")[: NAME_BYTES - 1]  # display only: the key is the hash
        self._map[at : at + NAME_BYTES] = raw.ljust(NAME_BYTES, b"\0")


@contextmanager
def _stripe(locks: StripeLocks, stripe: int) -> Iterator[None]:
    """Hold ``stripe`` for a ``with`` block; raise HealthUnavailable if it cannot be taken."""
    _take(locks, stripe)
    try:
        yield
    finally:
        locks.release(stripe)


def _take(locks: StripeLocks, stripe: int) -> None:
    """Take ``stripe``; a lock that times out (or whose holder is stopped) is the health
    state being unavailable, which callers answer by losing a sample, never a request."""
    try:
        locks.acquire(stripe)
    except LockUnavailable as ex:
        raise HealthUnavailable(f"health table {ex}") from ex


def window_counts(words: memoryview, base: int, now: int) -> tuple[int, int]:
    """Return (requests, failures) counted in an upstream's rolling window at ``now``."""
    width = words[base + BUCKET_NS]
    if width <= 0:
        return 0, 0
    epoch = now // width
    requests = failures = 0
    for at in range(base + BUCKETS_AT, base + BUCKETS_AT + 3 * BUCKETS, 3):
        if epoch - BUCKETS < words[at] <= epoch:
            requests += words[at + 1]
            failures += words[at + 2]
    return requests, failures


def snapshot(
    path: str | None = None, *, clock: Callable[[], int] | None = None
) -> list[dict[str, Any]]:
    """Read the state of every target and upstream of the host (from any process, no locks).

    For the operator's tools (``gw upstreams``, metrics): opens the table read-only, claims
    nothing, and describes each slot as a JSON-ready dict with ``kind`` "target" or "upstream".

    Raises:
        HealthTableError: there is no table to read.
    """
    path = path or default_path()
    if not path:
        raise HealthTableError("GW_RUNTIME_DIR is not set: no health table to read")
    with HealthTable.open(path, attach=False, clock=clock) as table:
        now = table.now()
        words = table.words
        return [
            _describe_target(words, base, name, now)
            if targets
            else _describe_upstream(words, base, name, now)
            for targets, name, base in table.entries()
        ]


def _describe_target(words: memoryview, base: int, name: str, now: int) -> dict[str, Any]:
    upstream, _, url = name.partition("\0")
    until = words[base + EJECTED_UNTIL]
    return {
        "kind": "target",
        "upstream": upstream,
        "target": url,
        "state": _target_state(words, base, now),
        "outstanding": words[base + OUTSTANDING],
        "consecutive_failures": words[base + FAILS],
        "ejected_for": round(max(0, until - now) / 1e9, 3),
        "ejections_in_a_row": words[base + EJECTIONS],
        "times_ejected": words[base + EJECTED_TOTAL],
        "failures": words[base + FAILURES],
        "active": _describe_active(words, base, now),
    }


def _target_state(words: memoryview, base: int, now: int) -> str:
    until = words[base + EJECTED_UNTIL]
    if words[base + ACTIVE_DOWN]:
        return "down"
    if until > now:
        return "ejected"
    if until:
        return "probing" if words[base + PROBE_UNTIL] > now else "half_open"
    return "healthy"


def _describe_active(words: memoryview, base: int, now: int) -> dict[str, Any] | None:
    if not words[base + ACTIVE_AT]:
        return None  # never checked
    return {
        "up": not words[base + ACTIVE_DOWN],
        "streak": words[base + ACTIVE_STREAK],
        "last_status": words[base + ACTIVE_STATUS],
        "checked_ago": round((now - words[base + ACTIVE_AT]) / 1e9, 3),
    }


def _describe_upstream(words: memoryview, base: int, name: str, now: int) -> dict[str, Any]:
    requests, failures = window_counts(words, base, now)
    return {
        "kind": "upstream",
        "upstream": name,
        "breaker": _breaker_state(words, base, now),
        "open_for": round(max(0, words[base + OPEN_UNTIL] - now) / 1e9, 3)
        if words[base + BREAKER] == OPEN
        else 0.0,
        "window_requests": requests,
        "window_failures": failures,
        "trips": words[base + TRIPS],
    }


def _breaker_state(words: memoryview, base: int, now: int) -> str:
    """Name the breaker state an upstream slot holds at ``now``."""
    state = words[base + BREAKER]
    if state == OPEN and now >= words[base + OPEN_UNTIL]:
        state = HALF_OPEN  # it becomes half-open on the next request
    return BREAKER_STATES[state]


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
    layout = _Layout(targets, upstreams, rows, stripes)
    salt = secrets.token_bytes(16)
    header = _HEADER.pack(MAGIC, LAYOUT_VERSION, targets, upstreams, rows, stripes, salt)
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
    # PERF: one getpid per call; the handle is opened once per process.
    if table is not None and table.pid == os.getpid():
        return table
    with _SHARED_LOCK:
        if _SHARED is None or _SHARED.pid != os.getpid():
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


def _name_key(salt: bytes, name: str) -> int:
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8, key=salt).digest()
    return int.from_bytes(digest, "little", signed=True) or 1


def _start_time(pid: int) -> int | None:
    """Return when process ``pid`` started (clock ticks since boot); None if gone or a zombie.

    A pid alone would be wrong once the kernel reuses it; pid and start time name one process.
    """
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except OSError:
        return _start_time_without_proc(pid)
    return None if fields[0] in (b"Z", b"X") else int(fields[19])


def _start_time_without_proc(pid: int) -> int | None:
    """Fall back to "the pid exists" where /proc is missing (start time 0)."""
    if os.path.isdir("/proc/self"):
        return None  # /proc works: the process is gone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return 0
    return 0


def _map_file(path: str, writable: bool) -> tuple[_Layout, mmap.mmap, bytes]:
    """Map an existing table file (never through a symlink), checking its header."""
    try:
        fd = files.open_existing(path, writable=writable)
    except OSError as ex:
        raise HealthTableError(f"cannot open health table {path}: {ex.strerror}") from ex
    try:
        layout, salt = _read_header(path, os.pread(fd, _HEADER.size, 0))
        if os.fstat(fd).st_size != layout.size:
            raise HealthTableError(f"{path} does not have the size its header says")
        return layout, files.map_shared(fd, layout.size, writable=writable), salt
    finally:
        os.close(fd)


def _read_header(path: str, raw: bytes) -> tuple[_Layout, bytes]:
    if len(raw) < _HEADER.size:
        raise HealthTableError(f"{path} is too short to be a health table")
    magic, version, targets, upstreams, rows, stripes, salt = _HEADER.unpack(raw)
    if magic != MAGIC:
        raise HealthTableError(f"{path} is not a gw health table (bad magic)")
    if version != LAYOUT_VERSION:
        raise HealthTableError(
            f"{path} has layout version {version}, this gw reads {LAYOUT_VERSION}: "
            "restart the gunicorn master to recreate it"
        )
    if min(targets, upstreams, rows, stripes) < 1:
        raise HealthTableError(f"{path} has an inconsistent header")
    return _Layout(targets, upstreams, rows, stripes), salt


def _open_locks(path: str, layout: _Layout, deadline: float, data: mmap.mmap) -> StripeLocks:
    """Open the lock file paired with a data file (one stripe more, for the meta lock)."""
    try:
        return StripeLocks(path, layout.stripes + 1, deadline)
    except (OSError, ValueError) as ex:
        data.close()
        raise HealthTableError(f"cannot open health lock file {path}: {ex}") from ex
