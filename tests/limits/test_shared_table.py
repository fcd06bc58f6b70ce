"""The shared table within one process: header and version checks, slot reuse, table full,
operator functions from a separate process, thread locking and fork safety."""

from __future__ import annotations

import json
import multiprocessing
import os
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gw.limits import LimiterUnavailable, Rate, TableLayoutError
from gw.limits.layout import LAYOUT_VERSION, MAGIC
from gw.limits.table import SharedTable

REPO = Path(__file__).resolve().parents[2]
S = 1_000_000_000


class FakeClock:
    """A CLOCK_MONOTONIC stand-in that moves only when told."""

    def __init__(self) -> None:
        self.now = 10**15

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * S)


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "limits.table")


def operator(path: str, code: str) -> object:
    """Run ``code`` on the live table in a separate Python process; return its JSON result
    (``"unavailable"`` when it raised LimiterUnavailable)."""
    script = (
        "import json, sys\n"
        "from gw.limits import LimiterUnavailable, Rate\n"
        "from gw.limits.table import SharedTable\n"
        f"table = SharedTable.open({path!r})\n"
        "try:\n"
        f"    print(json.dumps({code}))\n"
        "except LimiterUnavailable:\n"
        "    print(json.dumps('unavailable'))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


class TestHeader:
    def test_create_sizes_the_files_and_open_reads_the_shape_back(self, path: str) -> None:
        geometry = SharedTable.create(path, slots=100, stripes=8, probe=64)
        assert (geometry.slots, geometry.stripes, geometry.probe) == (104, 8, 13)
        assert os.path.getsize(path) == geometry.size
        with SharedTable.open(path) as table:
            stats = table.stats()
        assert stats["slots"] == 104
        assert stats["stripes"] == 8
        assert stats["probe"] == 13
        assert stats["layout_version"] == LAYOUT_VERSION
        assert stats["used"] == 0 and stats["table_full"] == 0

    def test_files_are_readable_by_their_owner_only(self, path: str) -> None:
        SharedTable.create(path, slots=64, stripes=4)
        assert os.stat(path).st_mode & 0o777 == 0o600
        assert os.stat(path + ".lock").st_mode & 0o777 == 0o600

    @pytest.mark.parametrize("shape", [(0, 1, 1), (8, 0, 1), (8, 2, 0), (8.0, 2, 1), (True, 1, 1)])
    def test_create_refuses_impossible_shapes(self, path: str, shape: tuple[int, ...]) -> None:
        with pytest.raises(ValueError):
            SharedTable.create(path, *shape)

    def test_open_refuses_another_layout_version(self, path: str) -> None:
        SharedTable.create(path, slots=64, stripes=4)
        with open(path, "r+b") as file:
            file.seek(len(MAGIC))
            file.write(struct.pack("@I", LAYOUT_VERSION + 1))
        with pytest.raises(TableLayoutError, match=f"version {LAYOUT_VERSION + 1}"):
            SharedTable.open(path)

    def test_open_refuses_a_file_that_is_not_a_table(self, path: str) -> None:
        Path(path).write_bytes(b"x" * 4096)
        Path(path + ".lock").write_bytes(b"")
        with pytest.raises(TableLayoutError, match="not a gw rate-limit table"):
            SharedTable.open(path)

    def test_open_refuses_a_truncated_table(self, path: str) -> None:
        SharedTable.create(path, slots=64, stripes=4)
        os.truncate(path, os.path.getsize(path) - 16)
        with pytest.raises(TableLayoutError, match="header says"):
            SharedTable.open(path)

    def test_open_refuses_a_missing_table(self, path: str) -> None:
        with pytest.raises(TableLayoutError, match="cannot open"):
            SharedTable.open(path)

    def test_open_refuses_a_lock_file_of_another_table(self, path: str, tmp_path: Path) -> None:
        other = str(tmp_path / "other.table")
        SharedTable.create(path, slots=64, stripes=4)
        SharedTable.create(other, slots=64, stripes=4)
        os.replace(other + ".lock", path + ".lock")
        with pytest.raises(TableLayoutError, match="does not belong"):
            SharedTable.open(path)

    def test_open_refuses_a_symlink(self, path: str, tmp_path: Path) -> None:
        SharedTable.create(path, slots=64, stripes=4)
        link = str(tmp_path / "link.table")
        os.symlink(path, link)
        os.symlink(path + ".lock", link + ".lock")
        with pytest.raises(TableLayoutError, match="cannot open"):
            SharedTable.open(link)

    def test_layout_errors_are_limiter_unavailable(self) -> None:
        assert issubclass(TableLayoutError, LimiterUnavailable)


class TestSlots:
    def test_a_refilled_slot_is_reused_by_a_new_key(self, path: str) -> None:
        SharedTable.create(path, slots=4, stripes=1, probe=4)
        clock = FakeClock()
        rate = Rate(1, 1)
        with SharedTable.open(path, clock=clock) as table:
            for key in "abcd":
                assert table.check(key, rate).allowed
            with pytest.raises(LimiterUnavailable, match="table full"):
                table.check("e", rate)
            clock.advance(1)
            assert table.check("e", rate).allowed
            assert table.stats()["used"] == 1

    def test_a_full_table_keeps_serving_the_keys_it_holds(self, path: str) -> None:
        SharedTable.create(path, slots=4, stripes=1, probe=4)
        rate = Rate(2, 60)
        with SharedTable.open(path, clock=FakeClock()) as table:
            for key in "abcd":
                table.check(key, rate)
            for _ in range(3):
                with pytest.raises(LimiterUnavailable):
                    table.check("new", rate)
            assert [table.check(key, rate).remaining for key in "abcd"] == [0, 0, 0, 0]
            assert not table.check("a", rate).allowed
            assert table.stats()["table_full"] == 3

    def test_the_table_full_counter_is_readable_from_another_process(self, path: str) -> None:
        SharedTable.create(path, slots=2, stripes=1, probe=2)
        with SharedTable.open(path) as table:
            table.check("a", Rate(1, 60))
            table.check("b", Rate(1, 60))
            with pytest.raises(LimiterUnavailable):
                table.check("c", Rate(1, 60))
            stats = operator(path, "table.stats()")
        assert isinstance(stats, dict)
        assert stats["table_full"] == 1 and stats["used"] == 2

    def test_reset_keeps_the_other_keys_of_a_probe_chain(self, path: str) -> None:
        SharedTable.create(path, slots=4, stripes=1, probe=4)
        rate = Rate(2, 60)
        with SharedTable.open(path, clock=FakeClock()) as table:
            for key in "abcd":
                table.check(key, rate)
            for gone in "abcd":
                assert table.reset(gone)
                others = [key for key in "abcd" if key != gone]
                assert all(table.peek(key, rate) is not None for key in others)
                assert table.check(gone, rate).remaining == 1
            assert [table.check(key, rate).remaining for key in "abcd"] == [0] * 4
            assert [table.check(key, rate).allowed for key in "abcd"] == [False] * 4

    def test_many_keys_never_share_a_bucket(self, path: str) -> None:
        SharedTable.create(path, slots=512, stripes=4, probe=128)
        rate = Rate(3, 60)
        with SharedTable.open(path) as table:
            keys = [f"client-{i}" for i in range(400)]
            assert [table.check(key, rate).remaining for key in keys] == [2] * 400
            assert [table.check(key, rate).remaining for key in keys] == [1] * 400
            assert table.stats()["used"] == 400


class TestOperator:
    def test_peek_and_reset_work_from_another_process(self, path: str) -> None:
        SharedTable.create(path, slots=64, stripes=4)
        rate = Rate(3, 60)
        with SharedTable.open(path) as table:
            for _ in range(3):
                table.check("client", rate)
            seen = operator(path, "table.peek('client', Rate(3, 60))")
            assert isinstance(seen, list)
            assert seen[:3] == [False, 3, 0]
            assert operator(path, "table.reset('client')") is True
            assert table.check("client", rate).remaining == 2
            assert operator(path, "table.peek('nobody', Rate(3, 60))") is None


class TestRecreate:
    def test_recreating_leaves_open_workers_working_and_new_ones_start_fresh(
        self, path: str
    ) -> None:
        SharedTable.create(path, slots=64, stripes=4)
        rate = Rate(2, 60)
        with SharedTable.open(path) as old:
            old.check("client", rate)
            SharedTable.create(path, slots=128, stripes=8)
            assert old.check("client", rate).remaining == 0
            with SharedTable.open(path) as new:
                assert new.check("client", rate).remaining == 1
                assert new.stats()["slots"] == 128


class TestThreads:
    def test_a_thread_holding_a_stripe_makes_another_give_up_at_the_deadline(
        self, path: str
    ) -> None:
        SharedTable.create(path, slots=64, stripes=4)
        with SharedTable.open(path, deadline=0.05) as table:
            stripe = table._place("client")[1]
            table._locks.acquire(stripe)
            outcome: list[tuple[LimiterUnavailable, float]] = []

            def other() -> None:
                started = time.monotonic()
                try:
                    table.check("client", Rate(3, 60))
                except LimiterUnavailable as ex:
                    outcome.append((ex, time.monotonic() - started))

            worker = threading.Thread(target=other)
            worker.start()
            worker.join(5)
            table._locks.release(stripe)
            assert len(outcome) == 1
            error, waited = outcome[0]
            assert "deadline" in str(error)
            assert 0.04 <= waited < 2
            assert table.check("client", Rate(3, 60)).allowed

    def test_threads_sharing_one_table_admit_exactly_the_burst(self, path: str) -> None:
        SharedTable.create(path, slots=64, stripes=4)
        rate = Rate(500, 3600)
        with SharedTable.open(path, deadline=5) as table:
            counts: list[int] = []

            def hammer() -> None:
                counts.append(sum(table.check("hot", rate).allowed for _ in range(400)))

            workers = [threading.Thread(target=hammer) for _ in range(4)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(30)
        assert sum(counts) == 500


class TestHandles:
    def test_two_handles_in_one_process_exclude_each_other(self, path: str) -> None:
        """Record locks belong to the process: handles must share their thread locks."""
        SharedTable.create(path, slots=64, stripes=4)
        with SharedTable.open(path) as first, SharedTable.open(path, deadline=0.05) as second:
            stripe = first._place("client")[1]
            first._locks.acquire(stripe)
            outcome: list[str] = []

            def other() -> None:
                try:
                    second.check("client", Rate(3, 60))
                    outcome.append("entered a held stripe")
                except LimiterUnavailable:
                    outcome.append("waited")

            worker = threading.Thread(target=other)
            worker.start()
            worker.join(5)
            first._locks.release(stripe)
        assert outcome == ["waited"]

    def test_closing_one_handle_keeps_the_locks_another_holds(self, path: str) -> None:
        """Closing any descriptor of a file drops the process's record locks on it."""
        SharedTable.create(path, slots=64, stripes=4)
        holder = SharedTable.open(path)
        stripe = holder._place("client")[1]
        holder._locks.acquire(stripe)
        try:
            SharedTable.open(path).close()
            decided = operator(path, "table.check('client', Rate(3, 60)).allowed")
        finally:
            holder._locks.release(stripe)
            holder.close()
        assert decided == "unavailable"

    def test_open_refuses_a_table_without_its_lock_file(self, path: str) -> None:
        SharedTable.create(path, slots=64, stripes=4)
        os.unlink(path + ".lock")
        with pytest.raises(TableLayoutError, match="lock file"):
            SharedTable.open(path)


def _check_in_child(path: str, results: multiprocessing.Queue[object]) -> None:
    """Use a table inherited through fork (its parent held a thread lock at fork time)."""
    try:
        results.put(_TABLE[0].check("client", Rate(3, 60)).allowed)
    except LimiterUnavailable as ex:
        results.put(str(ex))


_TABLE: list[SharedTable] = []


def test_a_child_forked_while_a_parent_thread_held_a_stripe_is_not_wedged(path: str) -> None:
    """Thread locks copied by fork are renewed in the child; record locks are not inherited."""
    SharedTable.create(path, slots=64, stripes=4)
    with SharedTable.open(path, deadline=0.5) as table:
        _TABLE[:] = [table]
        stripe = table._place("client")[1]
        table._locks._threads[stripe].acquire()
        try:
            context = multiprocessing.get_context("fork")
            results: multiprocessing.Queue[object] = context.Queue()
            child = context.Process(target=_check_in_child, args=(path, results))
            child.start()
            outcome = results.get(timeout=10)
            child.join(10)
        finally:
            table._locks._threads[stripe].release()
            _TABLE.clear()
    assert outcome is True


class TestSeveralBuckets:
    def test_a_stripe_filling_up_mid_request_takes_nothing(self, path: str) -> None:
        SharedTable.create(path, slots=4, stripes=1, probe=4)
        rate = Rate(1, 60)
        with SharedTable.open(path, clock=FakeClock()) as table:
            for key in "abc":
                assert table.check(key, rate).allowed
            with pytest.raises(LimiterUnavailable, match="table full"):
                table.check_all([("x", rate), ("y", rate)])  # two new keys, one free slot
            assert table.peek("x", rate) is None and table.peek("y", rate) is None
            assert table.stats()["used"] == 3
            assert table.check("x", rate).allowed  # the free slot is still free
            assert [table.check(key, rate).allowed for key in "abcx"] == [False] * 4

    def test_new_keys_of_one_request_take_distinct_slots(self, path: str) -> None:
        SharedTable.create(path, slots=4, stripes=1, probe=4)
        rate = Rate(2, 60)
        with SharedTable.open(path, clock=FakeClock()) as table:
            decisions = table.check_all([(key, rate) for key in "abcd"])
            assert [d.remaining for d in decisions] == [1, 1, 1, 1]
            assert table.stats()["used"] == 4
            assert [table.check(key, rate).remaining for key in "abcd"] == [0, 0, 0, 0]
