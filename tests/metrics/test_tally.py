"""gw.observe.tally: observations tallied and added at publish read exactly as one
``observe`` each (bounds included: a value equal to a bound is in that bound's bucket)."""

from __future__ import annotations

import pytest
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
