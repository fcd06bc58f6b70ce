"""The compiled grouping of a batch for the metrics (gw/observe/_grouped.c) makes the Python
form's groups, in the same order, for any batch; where it declines a batch, the Python form
groups it; where it is not built, the Python form groups every batch.

CI builds it and sets ``GW_REQUIRE_COMPILED=1`` (see test_accesslog_compiled.py).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gw.core.exchange import Exchange
from gw.observe import instruments

compiled = pytest.mark.skipif(
    instruments._grouped is instruments._python_grouped,
    reason="gw.observe._grouped is not built here (no C compiler at install)",
)


def test_ci_has_the_compiled_form() -> None:
    if os.environ.get("GW_REQUIRE_COMPILED") != "1":
        pytest.skip("only where the build is required (CI)")
    assert instruments._grouped is instruments._compiled_grouped


def c_form(batch: list[Any]) -> Any:
    return instruments._c_grouped(
        batch, instruments._METHODS, "OTHER", instruments.NO_ROUTE, "proxy"
    )


def as_lists(grouped: Any) -> list[list[tuple[Any, list[Any]]]]:
    """The groups with their order: what the tallies are handed."""
    return [list(groups.items()) for groups in grouped]


def exchange(
    method: Any = "GET",
    route: Any = "users",
    status: Any = 200,
    started: Any = 10.0,
    ended: Any = 10.25,
    upstream: Any = "users",
    upstream_seconds: Any = 0.125,
    cls: type[Exchange] = Exchange,
) -> Exchange:
    e = cls(request_id="r", method=method, raw_target="/")
    e.route, e.status, e.started, e.ended = route, status, started, ended
    e.upstream, e.upstream_seconds = upstream, upstream_seconds
    return e


FIELDS = st.fixed_dictionaries(
    {
        "method": st.sampled_from(["GET", "POST", "HEAD", "get", "BREW", "", "OPTIONS"]),
        "route": st.sampled_from([None, "", "users", "orders", "(none)"]),
        "status": st.sampled_from([0, 99, 100, 200, 204, 301, 404, 429, 500, 503, 599, 600]),
        "started": st.floats(0, 1e6),
        "ended": st.floats(0, 1e6),
        "upstream": st.sampled_from([None, "users", "orders"]),
        "upstream_seconds": st.one_of(st.none(), st.floats(0, 60)),
    }
)


@compiled
@settings(max_examples=300, deadline=None)
@given(st.lists(FIELDS, max_size=40))
def test_the_compiled_groups_are_the_python_groups(batch: list[dict[str, Any]]) -> None:
    exchanges = [exchange(**fields) for fields in batch]
    made = c_form(exchanges)
    assert made is not None
    assert as_lists(made) == as_lists(instruments._python_grouped(exchanges))


@compiled
def test_equal_keys_made_of_other_objects_are_one_group() -> None:
    # the compiled form's shortcut is for the key before's very objects; equal ones still meet
    batch = [
        exchange(method="".join(["G", "ET"]), route="".join(["us", "ers"]), status=201),
        exchange(route="orders"),
        exchange(started=1.0, ended=1.5),
        exchange(method="BREW", upstream="".join(["us", "ers"])),
        exchange(method="PATCH", status=404, upstream=None),
    ]
    requests, upstreams = c_form(batch)
    assert list(requests.items()) == [
        (("users", "GET", 2), [0.25, 0.5]),
        (("orders", "GET", 2), [0.25]),
        (("users", "OTHER", 2), [0.25]),
        (("users", "PATCH", 4), [0.25]),
    ]
    assert list(upstreams.items()) == [(("users", "proxy"), [0.125] * 4)]


@compiled
@pytest.mark.parametrize(
    "odd",
    [
        {"status": True},  # an int of another class
        {"status": -1},  # Python's floor division: -1 // 100 is -1
        {"status": 2**70},
        {"started": 10},  # an int where a float is
        {"ended": None},
        {"method": None},
        {"route": 5},
        {"upstream": 7},
    ],
)
def test_the_compiled_form_declines_what_it_does_not_expect(odd: dict[str, Any]) -> None:
    batch = [exchange(), exchange(**odd)]
    assert c_form(batch) is None
    try:
        expected = as_lists(instruments._python_grouped(batch))
    except TypeError:  # the Python form meets the same error, and the batch's log says so
        with pytest.raises(TypeError):
            instruments._grouped(batch)
    else:
        assert as_lists(instruments._grouped(batch)) == expected


class Traced(Exchange):
    __slots__ = ()


@compiled
def test_a_subclass_and_a_field_never_set_are_read_as_python_reads_them() -> None:
    batch = [exchange(cls=Traced, status=503), exchange()]
    assert as_lists(c_form(batch)) == as_lists(instruments._python_grouped(batch))
    unset = exchange()
    del unset.upstream_seconds
    assert c_form([unset]) is None  # AttributeError cleared: the Python form raises it
    with pytest.raises(AttributeError):
        instruments._grouped([unset])


def test_without_the_compiled_form_the_python_form_groups_every_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(instruments, "_grouped", instruments._python_grouped)
    requests, upstreams = instruments._grouped([exchange(method="BREW", route=None, status=0)])
    assert dict(requests) == {(instruments.NO_ROUTE, "OTHER", 0): [0.25]}
    assert dict(upstreams) == {("users", "proxy"): [0.125]}
