"""W3C trace context: which client headers are continued, and what the upstream is sent."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gw.core import tracing

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{SPAN}-01"
_HEADER = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def _fields(header: str) -> tuple[str, str, str]:
    match = _HEADER.fullmatch(header)
    assert match is not None, header
    trace_id, span_id, flags = match.groups()
    assert trace_id != "0" * 32 and span_id != "0" * 16
    return trace_id, span_id, flags


def test_a_valid_traceparent_is_read_field_by_field() -> None:
    assert tracing.parse(VALID) == tracing.TraceParent(TRACE, SPAN, "01")
    assert tracing.parse(f"  {VALID}\t") == tracing.TraceParent(TRACE, SPAN, "01")


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        f"ff-{TRACE}-{SPAN}-01",  # version ff is forbidden
        f"00-{TRACE.upper()}-{SPAN}-01",  # upper-case hex
        f"00-{TRACE}-{SPAN.upper()}-01",
        f"00-{'0' * 32}-{SPAN}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"00-{TRACE[:-1]}-{SPAN}-01",  # short trace id
        f"00-{TRACE}-{SPAN}0-01",  # long parent id
        f"00-{TRACE}-{SPAN}-1",  # one flag digit
        f"00-{TRACE}-{SPAN}-01-extra",  # version 00 has exactly four fields
        f"00_{TRACE}_{SPAN}_01",
        f"0-{TRACE}-{SPAN}-01",
        f"00-{TRACE}-{SPAN}-0g",
        f"00-{TRACE} -{SPAN}-01",
        f"{VALID},{VALID}",  # two traceparent headers, joined by the server
        f"01-{TRACE}-{SPAN}-01x",  # a future version's extra fields start with '-'
    ],
)
def test_an_invalid_traceparent_is_refused(header: str | None) -> None:
    assert tracing.parse(header) is None
    if header is not None:
        with pytest.raises(ValueError):
            tracing.child(header)


def test_a_future_version_is_continued_as_version_00() -> None:
    trace_id, header = tracing.child(f"cc-{TRACE}-{SPAN}-01-what-the-future-holds")
    assert trace_id == TRACE
    assert _fields(header)[0] == TRACE
    assert header.startswith("00-")


def test_the_child_keeps_the_trace_and_its_flags_with_a_new_parent_id() -> None:
    for flags in ("00", "01", "03"):
        trace_id, header = tracing.child(f"00-{TRACE}-{SPAN}-{flags}")
        assert trace_id == TRACE
        got_trace, got_span, got_flags = _fields(header)
        assert (got_trace, got_flags) == (TRACE, flags)
        assert got_span != SPAN


def test_every_hop_gets_its_own_parent_id() -> None:
    spans = {_fields(tracing.child(VALID)[1])[1] for _ in range(50)}
    assert len(spans) == 50


def test_start_mints_a_sampled_trace_unless_told_otherwise() -> None:
    trace_id, header = tracing.start()
    assert _fields(header) == (trace_id, _fields(header)[1], "01")
    assert _fields(tracing.start(sampled=False)[1])[2] == "00"
    assert tracing.start()[0] != trace_id


@pytest.mark.parametrize("zeros", ["0" * 32 + SPAN, TRACE + "0" * 16])
def test_a_new_trace_never_has_an_all_zero_id(monkeypatch: pytest.MonkeyPatch, zeros: str) -> None:
    """Both ids come from one draw; a draw whose trace or span id is all zeros (invalid in
    W3C trace context) is drawn again."""
    draws = iter([zeros, TRACE + SPAN])
    monkeypatch.setattr(tracing, "random_hex", lambda nbytes: next(draws))
    assert tracing.start() == (TRACE, VALID)


def test_a_valid_traceparent_is_continued_with_its_tracestate() -> None:
    trace = tracing.propagate(VALID, "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7")
    assert trace.continued
    assert trace.trace_id == TRACE
    assert _fields(trace.traceparent)[0] == TRACE
    assert trace.tracestate == "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"


@pytest.mark.parametrize("header", [None, "", "00-nonsense", f"00-{'0' * 32}-{SPAN}-01"])
def test_without_a_valid_traceparent_a_new_trace_starts_and_tracestate_is_dropped(
    header: str | None,
) -> None:
    trace = tracing.propagate(header, "congo=t61rcWkgMzE")
    assert not trace.continued
    assert trace.tracestate is None
    assert _fields(trace.traceparent)[0] == trace.trace_id != TRACE


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("a=1", "a=1"),
        ("a=1 ,\tb=2,,", "a=1,b=2"),
        ("tenant@vendor=x y", "tenant@vendor=x y"),
        (None, None),
        ("", None),
        (" , ", None),
        ("a=1,a=2", None),  # a duplicated key makes the list invalid
        ("A=1", None),  # keys are lower case
        ("a=", None),
        ("a=1=2", None),
        ("a=x ", "a=x"),  # trailing blanks are list whitespace, not value
        (",".join(f"k{i}=v" for i in range(33)), None),  # more than 32 members
        ("a=\x01", None),
    ],
)
def test_tracestate_is_passed_on_only_when_well_formed(given: str | None, sent: str | None) -> None:
    assert tracing.pass_tracestate(given) == sent


def test_a_long_tracestate_loses_big_members_first_then_members_from_the_end() -> None:
    big = "big=" + "x" * 200
    small = [f"k{i:02d}={'v' * 40}" for i in range(20)]  # 44 chars each
    sent = tracing.pass_tracestate(",".join([small[0], big, *small[1:]]))
    assert sent is not None
    assert len(sent) <= tracing.TRACESTATE_MAX
    assert "big=" not in sent
    members = sent.split(",")
    assert members == small[: len(members)]
    assert len(members) == 11  # 11 x 44 + 10 commas = 494; a 12th would pass 512


@given(st.text(max_size=80))
def test_parsing_never_raises_and_what_parses_renders_back(text: str) -> None:
    """Any header text is either refused or round-trips through its version 00 rendering."""
    parsed = tracing.parse(text)
    if parsed is not None:
        assert tracing.parse(parsed.header()) == parsed


@given(
    st.text("0123456789abcdef", min_size=32, max_size=32).filter(lambda s: s.strip("0")),
    st.text("0123456789abcdef", min_size=16, max_size=16).filter(lambda s: s.strip("0")),
    st.sampled_from(["00", "01", "02", "03", "ff"]),
)
def test_a_child_always_keeps_trace_id_and_flags(trace_id: str, span_id: str, flags: str) -> None:
    """Whatever valid header comes in, the upstream sees the same trace id and flags."""
    got_trace, header = tracing.child(f"00-{trace_id}-{span_id}-{flags}")
    assert got_trace == trace_id
    assert _fields(header)[0::2] == (trace_id, flags)
