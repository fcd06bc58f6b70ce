"""The compiled check (gw/limits/_table.c) decides what ``SharedTable.check``'s Python form
decides, writes what it writes, and takes the stripe's two locks as ``StripeLocks.acquire``
does; for a lock that is not free at once, a key outside its home slot and numbers beyond
int64, it leaves everything (nothing taken, no lock held) to the Python form.

CI builds it and sets ``GW_REQUIRE_COMPILED=1`` (see tests/unit/test_accesslog_compiled.py).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gw.core.gcra import Decision, Rate
from gw.limits import LimiterUnavailable
from gw.limits import table as table_module
from gw.limits.table import SharedTable
from tests.support.stripes import hold_stripe

compiled = pytest.mark.skipif(
    table_module.Checker is None,
    reason="gw.limits._table is not built here (no C compiler at install)",
)


def test_ci_has_the_compiled_form() -> None:
    if os.environ.get("GW_REQUIRE_COMPILED") != "1":
        pytest.skip("only where the build is required (CI)")
    assert table_module.Checker is not None


class Clock:
    def __init__(self) -> None:
        self.ns = 5_000_000_000

    def __call__(self) -> int:
        return self.ns


@contextmanager
def two_tables(tmp_path: Path) -> Iterator[tuple[SharedTable, SharedTable, Clock]]:
    """The same small table twice (same salt, so the same places), on one clock: the first
    checks with the compiled form, the second with the Python form alone."""
    path = str(tmp_path / "a.table")
    # 4 slots a stripe, probe 2: collisions, probing and a full stripe all happen
    SharedTable.create(path, slots=16, stripes=4, probe=2)
    copy = str(tmp_path / "b.table")
    for suffix in ("", ".lock"):
        Path(copy + suffix).write_bytes(Path(path + suffix).read_bytes())
    clock = Clock()
    with SharedTable.open(path, clock=clock) as fast, SharedTable.open(copy, clock=clock) as slow:
        slow._checker = None
        yield fast, slow, clock


_RATES = st.sampled_from(
    [
        Rate(3, 1.0),
        Rate(1, 60.0),
        Rate(10, 1.0, burst=2),
        Rate(2, 1e12, burst=2**62),  # beyond int64 arithmetic: the Python form's
        Rate(5, 0.5, burst=1),
    ]
)
_STEPS = st.lists(
    st.tuples(
        st.sampled_from([f"k{i}" for i in range(12)]),
        _RATES,
        st.integers(min_value=0, max_value=3),  # cost (0: the Python form's ValueError)
        st.sampled_from([0, 1, 1_000, 50_000_000, 400_000_000, 10**12]),  # ns before it
    ),
    max_size=40,
)


def compiled_check(table: SharedTable, key: str, rate: Rate, cost: int = 1) -> Decision | None:
    """The compiled form alone, asked about ``key`` as ``SharedTable.check`` asks it."""
    checker = table._checker
    assert checker is not None
    h, stripe, home = table._place(key)
    return checker.check(
        table._words, stripe, home, h, rate.emission_ns, rate.capacity, rate.limit, cost
    )


def _outcome(table: SharedTable, key: str, rate: Rate, cost: int) -> object:
    try:
        return table.check(key, rate, cost)
    except (ValueError, LimiterUnavailable) as ex:
        return type(ex).__name__, str(ex)


@compiled
@settings(max_examples=300, deadline=None)
@given(_STEPS)
def test_the_compiled_check_decides_and_writes_as_the_python_form(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, Rate, int, int]]
) -> None:
    with two_tables(tmp_path_factory.mktemp("tables")) as (fast, slow, clock):
        assert fast._checker is not None
        for key, rate, cost, later in steps:
            clock.ns += later
            assert _outcome(fast, key, rate, cost) == _outcome(slow, key, rate, cost)
            assert fast._words.tobytes() == slow._words.tobytes()


@compiled
def test_it_decides_a_refusal_too(tmp_path: Path) -> None:
    rate = Rate(2, 60.0)
    with two_tables(tmp_path) as (fast, _, _):
        said = [compiled_check(fast, "k", rate, cost) for cost in (1, 1, 1, 3)]
    assert [d.allowed if d else None for d in said] == [True, True, False, False]
    assert said[2] == Decision(False, 2, 0, 30.0, 60.0)
    assert said[3] is not None and said[3].retry_after == float("inf")  # 3 > the burst


@compiled
def test_a_stripe_taken_in_this_process_is_left_to_the_python_form(tmp_path: Path) -> None:
    rate = Rate(3, 1.0)
    with two_tables(tmp_path) as (fast, _, _):
        stripe = fast._place("k")[1]
        before = fast._words.tobytes()
        fast._locks.threads[stripe].acquire()  # another greenlet or thread holds it
        try:
            said = compiled_check(fast, "k", rate)
        finally:
            fast._locks.threads[stripe].release()
        assert said is None
        assert fast._words.tobytes() == before
        assert fast.check("k", rate).allowed  # both locks were given back


@compiled
def test_a_stripe_another_process_holds_is_left_to_the_python_form(tmp_path: Path) -> None:
    rate = Rate(3, 1.0)
    path = str(tmp_path / "ratelimit.table")
    SharedTable.create(path, slots=64, stripes=8)
    with SharedTable.open(path, deadline=0.05) as table:
        stripe = table._place("k")[1]
        child = hold_stripe(path + ".lock", stripe)
        try:
            assert compiled_check(table, "k", rate) is None
            assert not table._locks.threads[stripe].locked()  # given back
            with pytest.raises(LimiterUnavailable, match="rate-limit lock deadline"):
                table.check("k", rate)  # the Python form waited, then gave up
        finally:
            child.kill()
            child.wait()
        assert table.check("k", rate).allowed


@compiled
def test_the_compiled_check_holds_the_stripe_against_other_threads(tmp_path: Path) -> None:
    """Exact under threads: 4 threads x 500 checks of one key, of a burst of 1,000, in a rate
    that refills nothing meanwhile: exactly 1,000 admitted."""
    path = str(tmp_path / "ratelimit.table")
    SharedTable.create(path, slots=64, stripes=8)
    rate = Rate(1_000, 3600.0)
    admitted: list[int] = []
    with SharedTable.open(path, deadline=5.0) as table:

        def work() -> None:
            admitted.append(sum(table.check("k", rate).allowed for _ in range(500)))

        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sum(admitted) == 1_000
