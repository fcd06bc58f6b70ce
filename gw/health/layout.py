"""The health table's file format: its header, the slot layout and the names of every field.

Layout (native byte order: the file never leaves its host), all fields int64 words:

    0      header: magic, layout version, target slots, upstream slots, rows, stripes, salt
    64     target slots, TARGET_WORDS each: key, outstanding, passive and active state, counts
    ...    upstream slots, UPSTREAM_WORDS each: key, breaker state, rolling window buckets
    ...    process rows: pid, start time, then one outstanding count per target slot
    ...    names: NAME_BYTES per slot ("upstream\\0url" or "upstream"), for the operator

A slot's key is the salted blake2b-8 hash of its name (``name_key``). Readers of a slot's
words (the balancer, the breaker, the checker, the snapshot) name them with the offsets below.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct

from gw.health import HealthTableError
from gw.host import files
from gw.host.locks import StripeLocks

MAGIC = b"GWHLTAB\x00"
LOCK_MAGIC = b"GWHLLCK\x00"
LAYOUT_VERSION = 1
TABLE_FILE = "health.table"
DEFAULT_TARGETS = 1024
DEFAULT_UPSTREAMS = 256
DEFAULT_ROWS = 256
DEFAULT_STRIPES = 16
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

HEADER = struct.Struct("@8sIIIII4x16s")
_FIRST_WORD = 8
ROW_HEAD = 2  # pid, start time


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


class Layout:
    """Where each region of a table file of a given shape lives (in words, names in bytes)."""

    def __init__(self, targets: int, upstreams: int, rows: int, stripes: int) -> None:
        self.targets, self.upstreams, self.rows, self.stripes = targets, upstreams, rows, stripes
        self.targets_at = _FIRST_WORD
        self.upstreams_at = self.targets_at + targets * TARGET_WORDS
        self.row_words = ROW_HEAD + targets
        self.rows_at = self.upstreams_at + upstreams * UPSTREAM_WORDS
        self.names_at = 8 * (self.rows_at + rows * self.row_words)
        self.size = self.names_at + NAME_BYTES * (targets + upstreams)

    def region(self, targets: bool) -> tuple[int, int, int]:
        """Return the first word, slot count and slot width of one region."""
        if targets:
            return self.targets_at, self.targets, TARGET_WORDS
        return self.upstreams_at, self.upstreams, UPSTREAM_WORDS


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


def breaker_state(words: memoryview, base: int, now: int) -> str:
    """Name the breaker state an upstream slot holds at ``now``."""
    state = words[base + BREAKER]
    if state == OPEN and now >= words[base + OPEN_UNTIL]:
        state = HALF_OPEN  # it becomes half-open on the next request
    return BREAKER_STATES[state]


def name_key(salt: bytes, name: str) -> int:
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8, key=salt).digest()
    return int.from_bytes(digest, "little", signed=True) or 1


def map_file(path: str, writable: bool) -> tuple[Layout, mmap.mmap, bytes]:
    """Map an existing table file (never through a symlink), checking its header."""
    try:
        fd = files.open_existing(path, writable=writable)
    except OSError as ex:
        raise HealthTableError(f"cannot open health table {path}: {ex.strerror}") from ex
    try:
        layout, salt = _read_header(path, os.pread(fd, HEADER.size, 0))
        if os.fstat(fd).st_size != layout.size:
            raise HealthTableError(f"{path} does not have the size its header says")
        return layout, files.map_shared(fd, layout.size, writable=writable), salt
    finally:
        os.close(fd)


def _read_header(path: str, raw: bytes) -> tuple[Layout, bytes]:
    if len(raw) < HEADER.size:
        raise HealthTableError(f"{path} is too short to be a health table")
    magic, version, targets, upstreams, rows, stripes, salt = HEADER.unpack(raw)
    if magic != MAGIC:
        raise HealthTableError(f"{path} is not a gw health table (bad magic)")
    if version != LAYOUT_VERSION:
        raise HealthTableError(
            f"{path} has layout version {version}, this gw reads {LAYOUT_VERSION}: "
            "restart the gunicorn master to recreate it"
        )
    if min(targets, upstreams, rows, stripes) < 1:
        raise HealthTableError(f"{path} has an inconsistent header")
    return Layout(targets, upstreams, rows, stripes), salt


def open_locks(path: str, layout: Layout, deadline: float, data: mmap.mmap) -> StripeLocks:
    """Open the lock file paired with a data file (one stripe more, for the meta lock)."""
    try:
        return StripeLocks(path, layout.stripes + 1, deadline)
    except (OSError, ValueError) as ex:
        data.close()
        raise HealthTableError(f"cannot open health lock file {path}: {ex}") from ex
