"""Compaction keeps every count of dead workers, and allocation never leaves a sparse file."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from prometheus_client.mmap_dict import mmap_key
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from gw.observe.metricfiles import _AllocatedMmapedDict, compact, scrape_lock

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


def test_a_scrape_never_sees_a_file_half_made_or_half_removed(tmp_path: Path) -> None:
    """Workers start (their files are created) and die (their live gauges are removed, their
    counters compacted) while scrapes run: every scrape reads every file it lists."""
    failures: list[BaseException] = []
    stop = threading.Event()

    def scrape() -> None:
        while not stop.is_set():
            try:
                with scrape_lock(str(tmp_path)):
                    list(MultiProcessCollector(None, path=str(tmp_path)).collect())
            except Exception as ex:  # any failure is the finding
                failures.append(ex)
                return

    scraper = threading.Thread(target=scrape, daemon=True)
    scraper.start()
    deadline = time.monotonic() + 3
    pid = DEAD
    while not failures and time.monotonic() < deadline and pid < DEAD + 3000:
        write(tmp_path / f"counter_{pid}.db", {("c", "c_total", ""): 1})
        write(tmp_path / f"gauge_livesum_{pid}.db", {("g", "g", ""): 1})
        mark_process_dead(pid, str(tmp_path))  # what gw.observe.metrics.worker_exited does
        compact(str(tmp_path), pid)
        pid += 1
    stop.set()
    scraper.join(timeout=10)
    assert not failures, f"after {pid - DEAD} workers: {failures[0]!r}"
    assert totals(tmp_path)[("c_total", ())] == pid - DEAD
