"""gw.observe.tally: observations tallied and added at publish read exactly as one
``observe`` each (bounds included: a value equal to a bound is in that bound's bucket)."""

from __future__ import annotations

import sys
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest, values

from gw.observe.instruments import DURATION_BUCKETS
from gw.observe.tally import Tally, add_to_histogram

SAMPLES = [0.0, 0.0005, 0.001, 0.0010001, 0.005, 0.2, 0.25, 1.0, 29.9, 30.0, 30.1, 400.0]


def _exposition(fill: str, monkeypatch: pytest.MonkeyPatch) -> bytes:
    monkeypatch.setattr(values, "ValueClass", values.MutexValue)  # this registry only
    registry = CollectorRegistry()
    histogram = Histogram("t_seconds", "t", ["route"], buckets=DURATION_BUCKETS, registry=registry)
    if fill == "observe":
        for amount in SAMPLES:
            histogram.labels("r").observe(amount)
    else:
        tally: Tally[str] = Tally(DURATION_BUCKETS)
        for amount in SAMPLES[:5]:
            tally.add("r", amount)
        add_to_histogram(histogram.labels("r"), tally.take()["r"])
        for amount in SAMPLES[5:]:  # a second fold adds to the first
            tally.add("r", amount)
        (row,) = tally.take().values()
        assert row[0] == len(SAMPLES) - 5
        add_to_histogram(histogram.labels("r"), row)
    lines = generate_latest(registry).splitlines()
    return b"\n".join(line for line in lines if b"_created" not in line)  # when: not what


def test_a_tally_reads_as_one_observe_per_observation(monkeypatch: pytest.MonkeyPatch) -> None:
    tallied = _exposition("tally", monkeypatch)
    assert b't_seconds_bucket{le="0.001",route="r"} 3.0' in tallied
    assert tallied == _exposition("observe", monkeypatch)


def test_take_starts_afresh() -> None:
    tally: Tally[str] = Tally((1.0,))
    tally.add("a", 2.0)
    assert tally.take() == {"a": [1, 2.0, 0, 1]}
    assert tally.take() == {}


def test_batches_grouped_by_key_and_single_observations_add_up() -> None:
    tally: Tally[str] = Tally((1.0,))
    tally.extend({"a": [0.5, 2.0], "b": [3.0]})
    tally.add("a", 1.0)  # a bound: in its bucket
    tally.extend({"a": [4.0]})
    # count, sum, then the buckets (<= 1.0, +Inf)
    assert tally.take() == {"a": [4, 7.5, 2, 2], "b": [1, 3.0, 0, 1]}
    assert tally.take() == {}


def test_observations_added_while_others_take_are_each_counted_once() -> None:
    """Adders never wait for a lock; takers racing each other and them lose and repeat none."""
    tally: Tally[str] = Tally((1.0,))
    adders, each = 4, 20_000
    taken: list[int] = []
    adding = threading.Event()

    def add() -> None:
        for _ in range(each):
            tally.add("k", 0.5)

    def take() -> None:
        while adding.is_set():
            taken.append(sum(row[0] for row in tally.take().values()))

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        adding.set()
        takers = [threading.Thread(target=take) for _ in range(2)]
        workers = [threading.Thread(target=add) for _ in range(adders)]
        for thread in takers + workers:
            thread.start()
        for thread in workers:
            thread.join(timeout=60)
        adding.clear()
        for thread in takers:
            thread.join(timeout=60)
    finally:
        sys.setswitchinterval(interval)
    assert sum(taken) + tally.take().get("k", [0])[0] == adders * each
    assert len([n for n in taken if n]) > 1  # the takers did run while adders added


@given(
    st.lists(
        st.one_of(st.sampled_from(DURATION_BUCKETS), st.floats(0, 1000, allow_nan=False)),
        max_size=60,
    )
)
def test_each_observation_lands_in_the_first_bucket_whose_bound_holds_it(
    amounts: list[float],
) -> None:
    tally: Tally[str] = Tally(DURATION_BUCKETS)
    for amount in amounts:
        tally.add("r", amount)
    expected = [0] * (len(DURATION_BUCKETS) + 1)
    for amount in amounts:  # prometheus_client's rule, one observation at a time
        expected[next((i for i, b in enumerate(DURATION_BUCKETS) if amount <= b), -1)] += 1
    rows = tally.take()
    if not amounts:
        assert rows == {}
        return
    assert rows["r"][0] == len(amounts)
    assert rows["r"][1] == pytest.approx(sum(amounts))
    assert rows["r"][2:] == expected
