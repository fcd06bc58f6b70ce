"""The cachegrind side of ``proxybench.callgrind``: the CPU's caches read from sysfs, and the
counts read from cachegrind's summary (valgrind itself is not needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from proxybench.callgrind import Cache, Caches, Misses, parse_cachegrind, this_cpu

# As cachegrind 3.19 prints it (one run of pipeline_cost.py, this box's caches).
SUMMARY = """\
==8167== I   refs:      1,745,610,794
==8167== I1  misses:       21,042,692
==8167== LLi misses:        1,870,588
==8167== I1  miss rate:          1.21%
==8167== D   refs:        715,525,605  (499,143,620 rd   + 216,381,985 wr)
==8167== D1  misses:       23,077,596  ( 20,513,508 rd   +   2,564,088 wr)
==8167== LLd misses:        9,320,003  (  8,322,637 rd   +     997,366 wr)
==8167== LL refs:          44,120,288  ( 41,556,200 rd   +   2,564,088 wr)
==8167== LL misses:        11,190,591  ( 10,193,225 rd   +     997,366 wr)
"""


def test_the_summary_gives_instructions_and_each_levels_misses() -> None:
    assert parse_cachegrind(SUMMARY) == Misses(1_745_610_794, 21_042_692, 23_077_596, 11_190_591)


def test_a_run_without_the_cache_simulation_is_refused() -> None:
    with pytest.raises(AssertionError, match="I1  misses"):
        parse_cachegrind("==1== I   refs:      1,000\n")


def test_misses_per_request_subtract_the_start_up_run() -> None:
    start, run = Misses(1000, 10, 20, 5), Misses(5000, 50, 60, 25)
    assert (run - start).per(4) == Misses(1000, 10, 10, 5)


def write_cache(root: Path, index: int, level: int, kind: str, size: str, ways: int) -> None:
    entry = root / f"index{index}"
    entry.mkdir()
    for name, value in {
        "level": level,
        "type": kind,
        "size": size,
        "ways_of_associativity": ways,
        "coherency_line_size": 64,
    }.items():
        (entry / name).write_text(f"{value}\n")


def test_the_cpus_l1_and_l2_are_read_from_sysfs_and_l3_is_left_out(tmp_path: Path) -> None:
    write_cache(tmp_path, 0, 1, "Data", "32K", 8)
    write_cache(tmp_path, 1, 1, "Instruction", "64K", 4)
    write_cache(tmp_path, 2, 2, "Unified", "512K", 8)
    write_cache(tmp_path, 3, 3, "Unified", "32768K", 16)
    caches = this_cpu(tmp_path)
    assert caches == Caches(
        l1i=Cache(64 * 1024, 4), l1d=Cache(32 * 1024, 8), l2=Cache(512 * 1024, 8)
    )
    assert caches.options() == ["--I1=65536,4,64", "--D1=32768,8,64", "--LL=524288,8,64"]
    assert str(caches.l2) == "512 KiB 8-way"


def test_a_cpu_without_an_l2_is_named(tmp_path: Path) -> None:
    write_cache(tmp_path, 0, 1, "Data", "32K", 8)
    write_cache(tmp_path, 1, 1, "Instruction", "32K", 8)
    with pytest.raises(RuntimeError, match="no l2 cache"):
        this_cpu(tmp_path)
