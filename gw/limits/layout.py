"""The shared GCRA table's file format: its header, its geometry and the mapped data file.

Layout of the data file (native byte order and alignment: it never leaves its host)::

    0     header: magic b"GWRLTAB\\0", layout version, slots, stripes, probe bound, salt
    64    table_full counters: one uint64 per stripe, each written under its stripe's lock
    ...   slots (64-byte aligned): ``slots`` x 16 bytes = int64 TAT, int64 key hash

The lock file ``path + ".lock"`` starts with ``LOCK_MAGIC`` and the data file's salt, which
pairs the two; ``gw.limits.table.SharedTable`` opens both.
"""

from __future__ import annotations

import os
import struct

from gw.host import files
from gw.host.locks import StripeLocks
from gw.limits import TableLayoutError

MAGIC = b"GWRLTAB\x00"
LOCK_MAGIC = b"GWRLLCK\x00"
LAYOUT_VERSION = 1
DEFAULT_SLOTS = 65536
DEFAULT_STRIPES = 64
DEFAULT_PROBE = 32

# PERF: every struct is compiled once at import.
_HEADER = struct.Struct("@8sIIII16s")
COUNTERS_AT = 64
WORD = 8
SLOT_WORDS = 2  # TAT, hash


class Geometry:
    """Where everything lives in a table file of a given shape."""

    def __init__(self, slots: int, stripes: int, probe: int) -> None:
        self.slots = slots
        self.stripes = stripes
        self.probe = probe
        self.per_stripe = slots // stripes
        counters_end = COUNTERS_AT + WORD * stripes
        self.slots_at = -(-counters_end // 64) * 64
        self.size = self.slots_at + SLOT_WORDS * WORD * slots

    @classmethod
    def plan(cls, slots: int, stripes: int, probe: int) -> Geometry:
        """Validate a requested shape, rounding ``slots`` up to a multiple of ``stripes``."""
        for name, value in (("slots", slots), ("stripes", stripes), ("probe", probe)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        per_stripe = -(-slots // stripes)
        return cls(per_stripe * stripes, stripes, min(probe, per_stripe))


class DataFile:
    """The mapped data file of an existing table, its header checked."""

    def __init__(self, path: str) -> None:
        fd = _open_existing(path)
        try:
            size = os.fstat(fd).st_size
            if size < _HEADER.size:
                raise TableLayoutError(f"{path} is too short to be a rate-limit table")
            self.geometry, self.salt = _read_header(path, os.pread(fd, _HEADER.size, 0))
            if size != self.geometry.size:
                raise TableLayoutError(
                    f"{path} is {size} bytes, its header says {self.geometry.size}"
                )
            self._map = files.map_shared(fd, size)
        finally:
            os.close(fd)
        # PERF: one int64 view of the whole file: a field is one index, with no struct
        # unpacking and no tuple per probe; each store is one aligned 8-byte write.
        self.words = memoryview(self._map).cast("q")

    def close(self) -> None:
        """Unmap the file."""
        self.words.release()
        self._map.close()


def _open_existing(path: str) -> int:
    """Open a table file for reading and writing (never through a symlink)."""
    try:
        return files.open_existing(path)
    except OSError as ex:
        raise TableLayoutError(f"cannot open rate-limit table {path}: {ex.strerror}") from ex


def open_locks(path: str, data: DataFile, deadline: float) -> StripeLocks:
    """Open the lock file paired with ``data``; raise TableLayoutError if it cannot be."""
    try:
        return StripeLocks(path, data.geometry.stripes, deadline)
    except (OSError, ValueError) as ex:
        data.close()
        raise TableLayoutError(f"cannot open rate-limit lock file {path}: {ex}") from ex


def _read_header(path: str, raw: bytes) -> tuple[Geometry, bytes]:
    """Check a data file header and return the geometry and salt it describes."""
    magic, version, slots, stripes, probe, salt = _HEADER.unpack(raw)
    if magic != MAGIC:
        raise TableLayoutError(f"{path} is not a gw rate-limit table (bad magic)")
    if version != LAYOUT_VERSION:
        raise TableLayoutError(
            f"{path} has table layout version {version}, this gw reads version "
            f"{LAYOUT_VERSION}: recreate it (restart the gunicorn master)"
        )
    if stripes < 1 or slots < stripes or slots % stripes or not 1 <= probe <= slots // stripes:
        raise TableLayoutError(f"{path} has an inconsistent header")
    return Geometry(slots, stripes, probe), salt


def data_header(geometry: Geometry, salt: bytes) -> bytes:
    """Return the header bytes of a new data file."""
    return _HEADER.pack(
        MAGIC, LAYOUT_VERSION, geometry.slots, geometry.stripes, geometry.probe, salt
    )
