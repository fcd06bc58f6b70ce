"""Compaction keeps every count of dead workers, and allocation never leaves a sparse file."""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client.mmap_dict import mmap_key
from prometheus_client.multiprocess import MultiProcessCollector

from gw.metricfiles import _AllocatedMmapedDict, compact

DEAD = 2**22 + 7  # above pid_max (at most 2**22): no live process has it


def write(path: Path, entries: dict[tuple[str, str, str], float]) -> None:
    values = _AllocatedMmapedDict(str(path))
    for (metric, sample, le), value in entries.items():
        labels = {"le": le} if le else {}
        names = list(labels)
        key = mmap_key(metric, sample, names, [labels[n] for n in names], "help")
        values.write_value(key, value, 0.0)
    values.close()


def totals(directory: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    collector = MultiProcessCollector(None, path=str(directory))
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in collector.collect()
        for s in family.samples
    }


def test_compaction_changes_no_total_and_leaves_one_file_per_type(tmp_path: Path) -> None:
    write(tmp_path / f"counter_{DEAD}.db", {("c", "c_total", ""): 3})
    write(tmp_path / f"counter_{DEAD + 1}.db", {("c", "c_total", ""): 4})
    write(tmp_path / f"counter_{os.getpid()}.db", {("c", "c_total", ""): 5})  # alive
    for pid, fast in ((DEAD, 2), (DEAD + 1, 1)):
        write(
            tmp_path / f"histogram_{pid}.db",
            {("h", "h_bucket", "0.1"): fast, ("h", "h_bucket", "+Inf"): 1, ("h", "h_sum", ""): 0.5},
        )
    before = totals(tmp_path)

    assert compact(str(tmp_path), DEAD) == 4
    write(tmp_path / f"counter_{DEAD + 2}.db", {("c", "c_total", ""): 6})
    assert compact(str(tmp_path), DEAD + 2) == 1  # merged into the existing archive

    names = {p.name for p in tmp_path.iterdir() if p.name.endswith(".db")}
    assert names == {"counter_archive.db", f"counter_{os.getpid()}.db", "histogram_archive.db"}
    after = totals(tmp_path)
    assert after.pop(("c_total", ())) == 18
    assert before.pop(("c_total", ())) == 12
    assert after == before  # histogram buckets, sums and counts unchanged


def test_a_new_file_is_allocated_not_sparse(tmp_path: Path) -> None:
    path = tmp_path / "counter_1.db"
    write(path, {("c", "c_total", ""): 1})
    info = os.stat(path)
    assert info.st_blocks * 512 >= info.st_size == 65536
