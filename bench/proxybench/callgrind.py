"""What a command costs under valgrind: instructions (callgrind), and cache misses too
(cachegrind). Both are repeatable on a busy box."""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SYSFS_CACHES = Path("/sys/devices/system/cpu/cpu0/cache")


def instructions(argv: list[str], cwd: Path | None = None) -> int:
    """Run ``argv`` under callgrind and return the instructions it ran, start-up included."""
    summary = _valgrind("callgrind", [], argv, cwd)
    match = re.search(r"Collected : (\d+)", summary)
    assert match, "no callgrind summary"
    return int(match.group(1))


def _valgrind(tool: str, options: list[str], argv: list[str], cwd: Path | None) -> str:
    """Run ``argv`` under valgrind's ``tool`` (its output file thrown away); return valgrind's
    summary, which it prints on stderr."""
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run(
            ["valgrind", f"--tool={tool}", *options, f"--{tool}-out-file={out}/out", *argv],
            check=True,
            capture_output=True,
            text=True,
            cwd=cwd,
        )
    return done.stderr


@dataclass(frozen=True)
class Cache:
    """One simulated cache: its size in bytes, ways and line size."""

    size: int
    ways: int
    line: int = 64

    @property
    def option(self) -> str:
        """As cachegrind's ``--I1``, ``--D1`` and ``--LL`` take it."""
        return f"{self.size},{self.ways},{self.line}"

    def __str__(self) -> str:
        return f"{self.size // 1024} KiB {self.ways}-way"


@dataclass(frozen=True)
class Caches:
    """The caches cachegrind simulates: the first level's two and one last level, for which
    this harness takes the CPU's L2 (a miss there is a trip to L3 or memory)."""

    l1i: Cache
    l1d: Cache
    l2: Cache

    def options(self) -> list[str]:
        return [f"--I1={self.l1i.option}", f"--D1={self.l1d.option}", f"--LL={self.l2.option}"]


def this_cpu(sysfs: Path = SYSFS_CACHES) -> Caches:
    """The first core's L1 and L2 caches, as Linux lists them under ``sysfs``."""
    found: dict[str, Cache] = {}
    for index in sorted(sysfs.glob("index*")):
        level, kind = (index / "level").read_text().strip(), (index / "type").read_text().strip()
        name = {("1", "Instruction"): "l1i", ("1", "Data"): "l1d", ("2", "Unified"): "l2"}.get(
            (level, kind)
        )
        if name:
            found[name] = Cache(
                size=_bytes((index / "size").read_text().strip()),
                ways=int((index / "ways_of_associativity").read_text()),
                line=int((index / "coherency_line_size").read_text()),
            )
    missing = {"l1i", "l1d", "l2"} - found.keys()
    if missing:
        raise RuntimeError(f"{sysfs} lists no {', '.join(sorted(missing))} cache")
    return Caches(**found)


def _bytes(size: str) -> int:
    """``32K`` or ``1M`` (sysfs's sizes) in bytes."""
    units = {"K": 1024, "M": 1024 * 1024}
    return int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)


@dataclass(frozen=True)
class Misses:
    """What cachegrind counted: instructions, and misses at each simulated level."""

    instructions: int
    l1i: int
    l1d: int
    l2: int  # instruction and data misses of the last level together

    def __sub__(self, other: Misses) -> Misses:
        return Misses(*(a - b for a, b in zip(self.counts(), other.counts(), strict=True)))

    def per(self, requests: int) -> Misses:
        return Misses(*(count // max(1, requests) for count in self.counts()))

    def counts(self) -> tuple[int, int, int, int]:
        return (self.instructions, self.l1i, self.l1d, self.l2)


_SUMMARY = {"I   refs": "instructions", "I1  misses": "l1i", "D1  misses": "l1d", "LL misses": "l2"}


def parse_cachegrind(stderr: str) -> Misses:
    """The totals in cachegrind's summary on stderr (``==PID== D1  misses:  23,077,596 (...)``)."""
    found: dict[str, int] = {}
    for label, field in _SUMMARY.items():
        match = re.search(rf"^==\d+== {label}:\s+([\d,]+)", stderr, re.M)
        assert match, f"no {label!r} in cachegrind's summary"
        found[field] = int(match.group(1).replace(",", ""))
    return Misses(**found)


def cache_misses(argv: list[str], caches: Caches, cwd: Path | None = None) -> Misses:
    """Run ``argv`` under cachegrind with ``caches`` simulated; start-up included."""
    options = ["--cache-sim=yes", *caches.options()]
    return parse_cachegrind(_valgrind("cachegrind", options, argv, cwd))
