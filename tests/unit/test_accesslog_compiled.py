"""The compiled access line (gw/observe/_accessline.c) is the Python form's text, to the byte,
for any exchange; where it declines, the Python form makes the line; where it is not built,
the Python form makes every line.

CI builds it (the editable install of scripts/test-all.sh and the wheel of
scripts/fresh-install-check.sh) and sets ``GW_REQUIRE_COMPILED=1``, so a build that silently
failed cannot leave these tests comparing the Python form with itself.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gw.core.exchange import Exchange
from gw.core.forwarding import ClientInfo
from gw.observe import accesslog

compiled = pytest.mark.skipif(
    accesslog._compiled_line is accesslog._not_compiled,
    reason="gw.observe._accessline is not built here (no C compiler at install)",
)
WHEN = "2026-12-06T18:00:00+0000"


def test_ci_has_the_compiled_form() -> None:
    if os.environ.get("GW_REQUIRE_COMPILED") != "1":
        pytest.skip("only where the build is required (CI)")
    assert accesslog._compiled_line is not accesslog._not_compiled


def ordinary(text: str = "alice") -> Exchange:
    e = Exchange(request_id="req_0af7", method="GET", raw_target="/api/users/42?x=1")
    e.client = ClientInfo("127.0.0.1", "http", "127.0.0.1", False)
    e.path, e.route, e.upstream, e.upstream_target = "/api/users/42", "users", "users", "u:1"
    e.status, e.bytes_sent = 200, 27
    e.extra.update(user=text, trace_id="4bf92f3577b34da6a3ce929d0e0e4736", parts=[{"n": 1.5}])
    return e


def both(e: Exchange, duration_ms: float = 1.25, worker: int = 4242) -> tuple[Any, str]:
    return (
        accesslog._compiled_line(e, WHEN, duration_ms, worker),
        accesslog._line(e, WHEN, duration_ms, worker),
    )


@compiled
@pytest.mark.parametrize(
    "text",
    ["plain", "é", '"quoted"', "back\\slash", "ctl \x00\x1f", "del \x7f", "\ud800", "😀", ""],
)
def test_the_compiled_line_is_the_python_line(text: str) -> None:
    e = ordinary(text)
    e.request_id, e.path, e.error = f"req-{text}", f"/{text}", text or None
    e.route, e.upstream, e.upstream_target = text, text or None, None
    made, expected = both(e)
    assert made == expected  # not None: the compiled form made it
    assert json.loads(made)["path"] == f"/{text}"


@compiled
def test_a_long_line_grows_past_the_first_buffer() -> None:
    e = ordinary("x" * 5000)
    e.path = "/" + "y" * 3000
    made, expected = both(e)
    assert made == expected and len(made) > 8000


@compiled
@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda e: e.extra.update(route="from-a-stage"), "a stage's field wins"),
        (lambda e: setattr(e, "status", 200.0), "a status that is not an int"),
        (lambda e: setattr(e, "bytes_sent", 2**70), "an int beyond 64 bits"),
    ],
)
def test_the_compiled_form_declines_what_it_does_not_expect(
    change: Any, why: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    e = ordinary()
    change(e)
    made, expected = both(e)
    assert made is None, why
    monkeypatch.setattr(accesslog, "_now", lambda: WHEN)
    monkeypatch.setattr(Exchange, "elapsed_ms", lambda self: 1.25)
    monkeypatch.setattr(accesslog.process, "pid", lambda: 4242)
    assert accesslog.line_of(e) == expected  # made by the Python form


@compiled
def test_a_field_that_is_not_json_fails_both_forms_alike() -> None:
    e = ordinary()
    e.extra["handle"] = object()
    with pytest.raises(TypeError):
        accesslog._compiled_line(e, WHEN, 1.0, 1)
    with pytest.raises(TypeError):
        accesslog._line(e, WHEN, 1.0, 1)


def finished(e: Exchange, seconds: float = 0.002) -> Exchange:
    e.ended = e.started + seconds
    return e


def batch_both(batch: list[Exchange], wall: float = 1.7e9) -> tuple[bytes, bytes]:
    """The batch's bytes from whichever form is built here, and from the Python form."""
    return (
        accesslog._batch_lines(batch, wall, 4242, accesslog._python_line),
        accesslog._python_lines(batch, wall, 4242, accesslog._python_line),
    )


def test_without_the_compiled_form_the_python_form_makes_every_line() -> None:
    batch = [finished(ordinary(f"user-{n}")) for n in range(3)]
    made, expected = batch_both(batch)
    assert made == expected
    assert [json.loads(line)["user"] for line in made.splitlines()] == [
        "user-0",
        "user-1",
        "user-2",
    ]


@compiled
def test_a_batch_hands_the_lines_it_declines_to_the_python_form_in_their_place(
    caplog: pytest.LogCaptureFixture,
) -> None:
    declined = finished(ordinary("declined"))
    declined.extra["route"] = "a stage's"  # a base field's name: the Python form's line
    unwritable = finished(ordinary("unwritable"))
    unwritable.extra["handle"] = object()  # not JSON: reported, and no line
    counted_in_ints = finished(ordinary("ints"))
    counted_in_ints.started, counted_in_ints.ended = 100, 101  # not floats: the Python form's
    batch = [finished(ordinary("first")), declined, unwritable, counted_in_ints]
    made, expected = batch_both(batch)
    assert made == expected
    users = [json.loads(line)["user"] for line in made.splitlines()]
    assert users == ["first", "declined", "ints"]
    assert [json.loads(line)["route"] for line in made.splitlines()][1] == "a stage's"
    assert "access line of request req_0af7 dropped" in caplog.text


@compiled
def test_a_batch_that_spans_seconds_says_each_lines_own_second() -> None:
    batch = [finished(ordinary(str(n))) for n in range(4)]
    for n, e in enumerate(batch):
        e.ended = 1000.25 + n * 0.5  # two lines a second
    made, expected = batch_both(batch, wall=1.7e9)
    assert made == expected
    times = [json.loads(line)["time"] for line in made.splitlines()]
    assert times[0] == times[1] != times[2] == times[3]


@compiled
@pytest.mark.parametrize("special", ['"', "\\", "\x00", "\x1f", "\x7f", "é", "\n"])
def test_an_escaped_character_is_found_wherever_it_is(special: str) -> None:
    # PERF's eight bytes at a time must find it at every place of a word and of the tail
    for length in range(1, 20):
        for at in range(length):
            text = "a" * at + special + "b" * (length - at - 1)
            e = ordinary(text)
            e.request_id, e.path = text, "/" + text
            made, expected = both(e)
            assert made == expected, (length, at)


@compiled
@settings(max_examples=500, deadline=None)
@given(
    st.floats(min_value=0, max_value=2e6)
    | st.integers(min_value=0, max_value=10**9).map(lambda n: n / 1000 + 0.0005)
    | st.integers(min_value=0, max_value=10**9).map(lambda n: n / 2000)
    | st.sampled_from([0.0, -0.0, -0.0004, 0.0005, 0.0015, 0.0025, 999999.9995, 1e6, 2.5e-7])
)
def test_the_duration_is_written_as_the_format_writes_it(duration_ms: float) -> None:
    made, expected = both(ordinary(), duration_ms)
    assert made == expected
    assert f'"duration_ms":{duration_ms:.3f},' in made


class Later(Exchange):
    """A subclass: its fields are read by name, not at the class's offsets."""

    __slots__ = ()


@compiled
def test_the_fields_of_a_subclass_or_a_changed_class_are_read_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sub = Later(request_id="req_sub", method="GET", raw_target="/x", path="/x", route="r")
    assert both(sub)[0] == both(sub)[1]
    e = ordinary()
    assert json.loads(both(e)[0])["route"] == "users"
    monkeypatch.setattr(Exchange, "route", property(lambda self: "from-a-property"))
    made, expected = both(e)
    assert made == expected and json.loads(made)["route"] == "from-a-property"
    monkeypatch.undo()
    assert json.loads(both(e)[0])["route"] == "users"


@compiled
def test_a_field_never_set_fails_both_forms_alike() -> None:
    e = ordinary()
    del e.route
    with pytest.raises(AttributeError):
        accesslog._compiled_line(e, WHEN, 1.0, 1)
    with pytest.raises(AttributeError):
        accesslog._line(e, WHEN, 1.0, 1)


# printable ASCII, which the compiled form copies, and the rest, which it has escaped
texts = st.text(st.characters(max_codepoint=0x7F), max_size=40) | st.text(max_size=40)
maybe_texts = st.none() | texts
numbers = st.integers(min_value=-(2**65), max_value=2**65)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)
field_names = texts | st.sampled_from(["route", "time", "error", "user"])


@compiled
@settings(max_examples=300, deadline=None)
@given(
    request_id=texts,
    method=st.sampled_from(["GET", "POST", "BREW"]) | texts,
    client=maybe_texts,
    path=texts,
    raw_target=st.text(max_size=700),
    names=st.tuples(maybe_texts, maybe_texts, maybe_texts),
    status=numbers,
    bytes_sent=numbers,
    error=maybe_texts,
    extra=st.dictionaries(field_names, json_values, max_size=4),
    duration_ms=st.floats(),
    worker=st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
def test_any_exchange_gets_the_python_forms_line(
    request_id: str,
    method: str,
    client: str | None,
    path: str,
    raw_target: str,
    names: tuple[str | None, str | None, str | None],
    status: int,
    bytes_sent: int,
    error: str | None,
    extra: dict[str, Any],
    duration_ms: float,
    worker: int,
) -> None:
    e = Exchange(request_id=request_id, method=method, raw_target=raw_target, path=path)
    e.client = ClientInfo(client, "http", client, False) if client is not None else None
    e.route, e.upstream, e.upstream_target = names
    e.status, e.bytes_sent, e.error = status, bytes_sent, error
    e.extra.update(extra)
    made, expected = both(e, duration_ms, worker)
    assert (made or expected) == expected
    in_64_bits = all(-(2**63) <= number < 2**63 for number in (status, bytes_sent))
    assert (made is not None) == (in_64_bits and accesslog._BASE_FIELDS.isdisjoint(extra))
