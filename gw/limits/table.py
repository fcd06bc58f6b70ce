"""The shared-memory GCRA table: one bucket per key, exact across every worker of a host.

Lifecycle: the gunicorn master calls ``SharedTable.create(path)`` once before forking; each
worker calls ``SharedTable.open(path)`` after the fork and keeps the result for its life.
The data file ``path`` and the lock file ``path + ".lock"`` belong on a memory file system
(``/dev/shm`` or the systemd ``RuntimeDirectory``); their format is ``gw.limits.layout``.

A key's hash is a salted blake2b-8 of the key (0 means "empty"; a key hashing to 0 is
stored as 1). The TAT is int64 nanoseconds on CLOCK_MONOTONIC, which on Linux is one clock
for every process of the host. Slots are split into ``stripes`` equal runs; a key lives in
stripe ``hash % stripes``, found by linear probing (wrapping inside the stripe) of at most
``probe`` slots from ``(hash // stripes) % slots_per_stripe``. A lookup stops at the first
empty slot, which is sound because a slot, once used, never becomes empty again (``reset``
makes a bucket full by zeroing its TAT, not its hash).

Reuse: a slot whose TAT has passed holds a full bucket, which is the same state as no bucket
at all, so a new key may take it over. Two keys whose 64-bit hashes collide share a bucket
(a 2**-64 chance per pair).

Table full: when a new key finds neither an empty nor a reusable slot within ``probe``
slots of its stripe, ``check`` raises ``LimiterUnavailable("rate-limit table full")`` and
adds one to that stripe's ``table_full`` counter (``stats()["table_full"]`` sums them). The
caller then applies its fail-open or fail-closed rule. Size the table for the number of
keys that can be live (not yet refilled) at once: a per-minute limit keyed by client IP
keeps a slot per client for up to a minute after its last request.

Recreating a table replaces both files atomically: workers of an older generation keep
their own (now unlinked) files, and new workers share the new ones.
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any, Self

from gw.core.gcra import NS_PER_SECOND, Decision, Rate, decide, decide_all, describe
from gw.host import files
from gw.host import locks as host_locks
from gw.host.locks import DEFAULT_DEADLINE, LockUnavailable, StripeLocks
from gw.limits import LimiterUnavailable, StripeFrozen, TableLayoutError
from gw.limits.layout import (
    COUNTERS_AT,
    DEFAULT_PROBE,
    DEFAULT_SLOTS,
    DEFAULT_STRIPES,
    LAYOUT_VERSION,
    LOCK_MAGIC,
    SLOT_WORDS,
    WORD,
    DataFile,
    Geometry,
    data_header,
    open_locks,
)

_PLACE_CACHE_SIZE = 8192
_OPEN_ATTEMPTS = 5

try:
    from gw.limits._table import Checker
except ImportError:  # built without a C compiler (setup.py: optional)
    Checker = None  # type: ignore[assignment,misc]


class SharedTable:
    """GCRA buckets in a shared mmap'd file, exact across the processes of one host.

    Thread-safe. Open one per worker process, after the fork.
    """

    def __init__(
        self,
        path: str,
        data: DataFile,
        locks: StripeLocks,
        clock: Callable[[], int],
    ) -> None:
        self.path = path
        self._data = data
        self._words = data.words
        self._locks = locks
        self._clock = clock
        self._salt = data.salt
        self._stripes = data.geometry.stripes
        self._per_stripe = data.geometry.per_stripe
        self._probe = data.geometry.probe
        self._first_word = data.geometry.slots_at // WORD
        self._places: dict[str, tuple[int, int, int]] = {}
        # PERF: the compiled form of ``check`` for a key in its home slot whose stripe is free
        # at once (gw/limits/_table.c); everything else is decided below, as before.
        self._checker: Checker | None = None
        if Checker is not None:
            self._checker = Checker(locks.fd, locks.threads, locks.frozen, clock, Decision)

    @staticmethod
    def create(
        path: str,
        slots: int = DEFAULT_SLOTS,
        stripes: int = DEFAULT_STRIPES,
        probe: int = DEFAULT_PROBE,
        *,
        mode: int = 0o600,
        owner: tuple[int, int] | None = None,
    ) -> Geometry:
        """Create (or replace) an empty table at ``path`` and its lock file; return its shape.

        Call once, in the gunicorn master before it forks. ``owner`` (uid, gid) hands the
        files to the user the workers run as, when the master runs as another one.
        """
        geometry = Geometry.plan(slots, stripes, probe)
        salt = secrets.token_bytes(16)
        lock_size = max(files.LOCK_HEADER_SIZE, geometry.stripes)
        lock = files.lock_header(LOCK_MAGIC, salt)
        files.write_atomically(path + ".lock", lock, lock_size, mode, owner)
        files.write_atomically(path, data_header(geometry, salt), geometry.size, mode, owner)
        return geometry

    @classmethod
    def open(
        cls,
        path: str,
        *,
        deadline: float = DEFAULT_DEADLINE,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> SharedTable:
        """Open the table a master created; raise TableLayoutError if it is not one.

        Args:
            path: the data file given to ``create``.
            deadline: seconds a check may wait for its stripe lock.
            clock: nanoseconds on a clock shared by every process (tests inject one).
        """
        for _ in range(_OPEN_ATTEMPTS):
            data = DataFile(path)
            locks = open_locks(path + ".lock", data, deadline)
            if files.lock_salt(locks.fd, LOCK_MAGIC) == data.salt:
                return cls(path, data, locks, clock)
            # The master is replacing the files between our two opens: try again.
            locks.close()
            data.close()
            time.sleep(0.01)
        raise TableLayoutError(f"{path}.lock does not belong to {path}")

    def check(self, key: str, rate: Rate, cost: int = 1) -> Decision:
        """Take ``cost`` tokens from ``key``'s bucket if they fit; raise LimiterUnavailable."""
        h, stripe, home = self._places.get(key) or self._place(key)
        checker = self._checker
        if checker is not None:
            decided = checker.check(
                self._words, stripe, home, h, rate.emission_ns, rate.capacity, rate.limit, cost
            )
            if decided is not None:
                return decided
        try:
            self._locks.acquire(stripe)
        except LockUnavailable as ex:
            raise _limiter_error(ex) from ex
        try:
            # Read the clock under the lock, so decisions on a bucket see increasing times.
            now = self._clock()
            words = self._words
            # PERF: most keys sit in their home slot: one read, no probing loop.
            at = home if words[home + 1] == h else self._find(h, stripe, home, now)
            held = words[at + 1] == h
            decision, tat = decide(words[at] if held else None, now, rate, cost)
            if tat is not None:
                words[at] = tat  # APPSEC: TAT before hash: a writer killed in between
                if not held:  # leaves the old key a stricter bucket, never a laxer one.
                    words[at + 1] = h
        finally:
            self._locks.release(stripe)
        return decision

    def check_all(self, buckets: Sequence[tuple[str, Rate]], cost: int = 1) -> list[Decision]:
        """Take ``cost`` tokens from every bucket if each has them, else from none.

        One critical section: the stripes of every bucket are locked in ascending order (one
        global order, so requests needing the same stripes never deadlock), the clock is read
        once, every bucket is decided, and only when all admit are the new TATs written.
        Waiting for the locks may take up to one deadline per stripe.
        """
        if len(buckets) == 1:  # PERF: one limit keeps the single-stripe fast path
            key, rate = buckets[0]
            return [self.check(key, rate, cost)]
        places = [self._places.get(key) or self._place(key) for key, _ in buckets]
        with _HeldAll(self._locks, sorted({stripe for _, stripe, _ in places})):
            now = self._clock()
            tats = {h: self._stored_tat(h, stripe, home) for h, stripe, home in places}
            ids = [(place[0], rate) for place, (_, rate) in zip(places, buckets, strict=True)]
            decisions, planned = decide_all(ids, tats, now, cost)
            if planned is not None:
                self._commit(planned, {place[0]: place for place in places}, now)
        return decisions

    def peek(self, key: str, rate: Rate) -> Decision | None:
        """Describe ``key``'s bucket now without taking from it; None when it is full."""
        h, stripe, home = self._places.get(key) or self._place(key)
        # PERF+APPSEC: a first look without the lock answers "full" for a key with no live
        # state (every address that never failed to authenticate: the failure throttle's
        # question on every request). It is exact for every write that completed before the
        # look (writes are under the lock, TAT before hash; a slot never empties again, so
        # the probe finds a stored key), and a write still under way is read as not yet done,
        # as if the look had come just before it. Any live state is read again under the lock.
        if not self._may_be_live(h, stripe, home):
            return None
        with _Held(self._locks, stripe):
            now = self._clock()
            at = self._lookup(h, stripe, home)
            if at < 0 or self._words[at] <= now:
                return None
            return describe(self._words[at], now, rate.emission_ns, rate, NS_PER_SECOND)

    def reset(self, key: str) -> bool:
        """Make ``key``'s bucket full again; return whether it held live state."""
        h, stripe, home = self._place(key)
        with _Held(self._locks, stripe):
            at = self._lookup(h, stripe, home)
            if at < 0 or self._words[at] <= self._clock():
                return False
            self._words[at] = 0
            return True

    def stats(self) -> dict[str, Any]:
        """Return the table's shape and usage (read without locks: a snapshot, not exact)."""
        geometry = self._data.geometry
        now = self._clock()
        slots = self._words[self._first_word :]
        used = sum(1 for tat, h in zip(slots[::2], slots[1::2], strict=True) if h and tat > now)
        return {
            "backend": "table",
            "path": self.path,
            "layout_version": LAYOUT_VERSION,
            "slots": geometry.slots,
            "used": used,
            "stripes": geometry.stripes,
            "probe": geometry.probe,
            "size_bytes": geometry.size,
            "table_full": sum(self._words[COUNTERS_AT // WORD : self._first_word]),
        }

    def close(self) -> None:
        """Release the mapping and the lock file."""
        self._checker = None
        self._words = memoryview(b"").cast("q")
        self._locks.close()
        self._data.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _place(self, key: str) -> tuple[int, int, int]:
        """Return ``key``'s hash, stripe and home slot (word index), caching recent keys."""
        # APPSEC: keys come from clients (addresses, headers); the per-table random salt
        # stops anyone from choosing keys that pile into one stripe and fill it.
        digest = hashlib.blake2b(
            key.encode("utf-8", "surrogatepass"), digest_size=8, key=self._salt
        ).digest()
        h = int.from_bytes(digest, "little", signed=True) or 1
        stripe = h % self._stripes
        offset = (h // self._stripes) % self._per_stripe
        home = self._first_word + SLOT_WORDS * (self._per_stripe * stripe + offset)
        # PERF: a hit skips blake2b and the arithmetic; the cache is bounded by dropping it
        # whole when full (cheaper than LRU bookkeeping on every hit).
        if len(self._places) >= _PLACE_CACHE_SIZE:
            self._places = {}
        self._places[key] = (h, stripe, home)
        return h, stripe, home

    def _find(self, h: int, stripe: int, home: int, now: int) -> int:
        """Return the word index of ``h``'s slot, or of a slot it may take; raise when full."""
        words = self._words
        free = -1
        for at in self._window(stripe, home):
            held = words[at + 1]
            if held == h:
                return at
            if held == 0:
                return at if free < 0 else free
            if free < 0 and words[at] <= now:
                free = at
        if free < 0:
            words[COUNTERS_AT // WORD + stripe] += 1
            raise LimiterUnavailable("rate-limit table full")
        return free

    def _may_be_live(self, h: int, stripe: int, home: int) -> bool:
        """Whether ``h`` has a slot whose TAT has not passed (read without the lock)."""
        at = self._lookup(h, stripe, home)
        return at >= 0 and self._words[at] > self._clock()

    def _stored_tat(self, h: int, stripe: int, home: int) -> int | None:
        """Return the TAT stored for ``h``, or None when it has no slot (a full bucket)."""
        at = self._lookup(h, stripe, home)
        return self._words[at] if at >= 0 else None

    def _commit(
        self, planned: dict[int, int], places: dict[int, tuple[int, int, int]], now: int
    ) -> None:
        """Store every planned TAT (under the locks of all their stripes), all or none.

        If a new key finds its stripe full, the TATs already stored by this call are put
        back before the error is raised, so that a refused request takes nothing.
        """
        words = self._words
        undo: list[tuple[int, int, int]] = []
        try:
            for h, tat in planned.items():
                _, stripe, home = places[h]
                at = home if words[home + 1] == h else self._find(h, stripe, home, now)
                undo.append((at, words[at], words[at + 1]))
                words[at] = tat  # APPSEC: TAT before hash, as in check: a writer killed
                words[at + 1] = h  # in between leaves a stricter bucket, never a laxer one.
        except LimiterUnavailable:
            for at, tat, held in reversed(undo):
                words[at + 1] = held
                words[at] = tat
            raise

    def _lookup(self, h: int, stripe: int, home: int) -> int:
        """Return the word index of ``h``'s slot, or -1 when it has none."""
        # PERF: most keys sit in their home slot, and most addresses the failure throttle
        # asks about have none (an empty home slot ends the probe): one read, no window.
        held = self._words[home + 1]
        if held == h:
            return home
        if held == 0:
            return -1
        for at in self._window(stripe, home):
            held = self._words[at + 1]
            if held == h:
                return at
            if held == 0:
                break
        return -1

    def _window(self, stripe: int, home: int) -> range | itertools.chain[int]:
        """Return the word indexes of the slots a key may occupy, in probing order."""
        first = self._first_word + SLOT_WORDS * self._per_stripe * stripe
        end = first + SLOT_WORDS * self._per_stripe
        stop = home + SLOT_WORDS * self._probe
        if stop <= end:
            return range(home, stop, SLOT_WORDS)
        wrapped = range(first, first + stop - end, SLOT_WORDS)
        return itertools.chain(range(home, end, SLOT_WORDS), wrapped)


class _Held:
    """Hold one stripe for a ``with`` block (for the operator paths, not ``check``)."""

    def __init__(self, locks: StripeLocks, stripe: int) -> None:
        self._locks = locks
        self._stripe = stripe

    def __enter__(self) -> None:
        _take(self._locks, self._stripe)

    def __exit__(self, *exc: object) -> None:
        self._locks.release(self._stripe)


class _HeldAll:
    """Hold several stripes for a ``with`` block, taken in the ascending order given."""

    def __init__(self, locks: StripeLocks, stripes: list[int]) -> None:
        self._locks = locks
        self._stripes = stripes

    def __enter__(self) -> None:
        taken: list[int] = []
        try:
            for stripe in self._stripes:
                _take(self._locks, stripe)
                taken.append(stripe)
        except BaseException:
            for stripe in reversed(taken):
                self._locks.release(stripe)
            raise

    def __exit__(self, *exc: object) -> None:
        for stripe in reversed(self._stripes):
            self._locks.release(stripe)


def _take(locks: StripeLocks, stripe: int) -> None:
    """Take ``stripe``; raise the limiter's errors for the host's lock errors."""
    try:
        locks.acquire(stripe)
    except LockUnavailable as ex:
        raise _limiter_error(ex) from ex


def _limiter_error(ex: LockUnavailable) -> LimiterUnavailable:
    """Translate a lock error: a frozen stripe stays frozen (callers refuse, whatever their
    fail-open rule); a timeout or a failed lock is the limiter being unavailable."""
    if isinstance(ex, host_locks.StripeFrozen):
        return StripeFrozen(f"rate-limit {ex}")
    return LimiterUnavailable(f"rate-limit {ex}")
