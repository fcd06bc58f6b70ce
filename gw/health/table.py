"""A process's handle on the host-wide health table: slots, their locks and process rows.

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

import logging
import mmap
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Self

from gw.health import HealthTableError, HealthUnavailable
from gw.health.layout import (
    KEY,
    LAST_USED,
    LOCK_MAGIC,
    NAME_BYTES,
    OUTSTANDING,
    ROW_HEAD,
    TARGET_WORDS,
    UPSTREAM_USED,
    Layout,
    Slot,
    breaker_state,
    map_file,
    name_key,
    open_locks,
)
from gw.host import files
from gw.host.locks import LockUnavailable, StripeLocks

log = logging.getLogger("gw.health")

__all__ = ["HealthTable"]

DEFAULT_DEADLINE = 0.05
_OPEN_ATTEMPTS = 5


class HealthTable:
    """A process's handle on the host's health table. Thread-safe; open one per process."""

    def __init__(
        self,
        path: str,
        mapped: tuple[Layout, mmap.mmap, bytes],
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
            mapped = layout, data, salt = map_file(path, writable=attach)
            if not attach:
                return cls(path, mapped, None, clock)
            locks = open_locks(path + ".lock", layout, deadline, data)
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
        share = self.layout.rows_at + self.row * self.layout.row_words + ROW_HEAD + slot.index
        if delta < 0 and words[share] + delta < 0:
            return  # counted before a reap of this process's row: nothing left to give back
        words[share] += delta
        words[base + OUTSTANDING] = max(0, words[base + OUTSTANDING] + delta)

    def breaker_state(self, upstream: str) -> str:
        """Return ``closed``, ``open`` or ``half_open`` for ``upstream`` (any process)."""
        base = self._find(False, name_key(self._salt, upstream))
        if base < 0:
            return "closed"
        return breaker_state(self.words, base, self.now())

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
        key = name_key(self._salt, name)
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
        heads = [layout.rows_at + r * layout.row_words + ROW_HEAD for r in rows]
        touched = {i for h in heads for i in range(layout.targets) if words[h + i]}
        all_heads = [layout.rows_at + r * layout.row_words + ROW_HEAD for r in range(layout.rows)]
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
