"""W3C Trace Context: continue the client's trace, or start one, for the hop to the upstream.

Pure module. The gateway is one hop of a trace: it keeps the trace id it was given (or mints
one), and sends the upstream a ``traceparent`` whose parent id is new, so that the upstream's
spans hang under the gateway's hop rather than under the client's. ``tracestate`` belongs to
the trace it came with and is passed on only with a valid ``traceparent``.

Reference: https://www.w3.org/TR/trace-context/ (header format, versioning, tracestate limits).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from gw.core.ids import random_hex

VERSION = "00"
SAMPLED = "01"
NOT_SAMPLED = "00"
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
# version-traceid-parentid-flags, lowercase hex only; a future version may append "-...".
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_MEMBER = re.compile(
    r"([a-z0-9][a-z0-9_\-*/]{0,255}(?:@[a-z][a-z0-9_\-*/]{0,13})?)"  # key or tenant@system
    r"=([\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e])"  # no ',' or '='
)
TRACESTATE_MAX = 512  # characters a hop must pass on; longer values are truncated
_TRACESTATE_MEMBERS = 32
_TRACESTATE_BIG_MEMBER = 128
_TRACESTATE_READ_LIMIT = 8192  # APPSEC: no regex work on anything longer


# PERF: NamedTuples, not frozen dataclasses: built on every request, they cost half as much.
class TraceParent(NamedTuple):
    """A parsed ``traceparent``: which trace, which span sent it, and its flags."""

    trace_id: str
    parent_id: str
    flags: str

    def header(self) -> str:
        """Render as a version 00 header value."""
        return f"{VERSION}-{self.trace_id}-{self.parent_id}-{self.flags}"


class Trace(NamedTuple):
    """What the pipeline needs: the id to log and the headers to send upstream."""

    trace_id: str
    traceparent: str
    tracestate: str | None
    continued: bool  # False when the gateway started the trace


def parse(value: str | None) -> TraceParent | None:
    """Return the parsed ``traceparent``, or None when it is missing or invalid.

    Version 00 must be exactly 55 characters. A higher version is read by its first four
    fields, as the specification asks, and is answered with version 00. Version ``ff``,
    upper-case hex, and all-zero trace or parent ids are invalid.
    """
    if not value:
        return None
    match = _TRACEPARENT.fullmatch(value.strip(" \t"))
    if match is None:
        return None
    version, trace_id, parent_id, flags, rest = match.groups()
    if version == "ff" or (version == VERSION and rest is not None):
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return TraceParent(trace_id, parent_id, flags)


def child(traceparent: str) -> tuple[str, str]:
    """Return ``(trace_id, traceparent)`` for the next hop: same trace and flags, new span id.

    Raises:
        ValueError: ``traceparent`` is not a valid header value.
    """
    parent = parse(traceparent)
    if parent is None:
        raise ValueError(f"not a valid traceparent: {traceparent[:64]!r}")
    return parent.trace_id, _hop(parent).header()


def start(sampled: bool = True) -> tuple[str, str]:
    """Return ``(trace_id, traceparent)`` for a new trace that begins at the gateway.

    ``sampled`` defaults to True: the gateway records every request's trace id in its access
    log, and an upstream with a parent-based sampler would otherwise record nothing for
    clients that send no ``traceparent``.
    """
    flags = SAMPLED if sampled else NOT_SAMPLED
    while True:
        # PERF: both ids from one draw, and the header written at once (no TraceParent made
        # and rendered): once per request.
        ids = random_hex(24)
        trace_id, span_id = ids[:32], ids[32:]
        if trace_id != _ZERO_TRACE and span_id != _ZERO_SPAN:  # all zeros: invalid
            return trace_id, f"{VERSION}-{trace_id}-{span_id}-{flags}"


def propagate(traceparent: str | None, tracestate: str | None) -> Trace:
    """Continue the client's trace if its ``traceparent`` is valid, else start a new one."""
    parent = parse(traceparent) if traceparent else None  # PERF: no call for none (usual)
    if parent is None:
        trace_id, header = start()
        return Trace(trace_id, header, None, False)  # not continued
    hop = _hop(parent)
    return Trace(hop.trace_id, hop.header(), pass_tracestate(tracestate), True)  # continued


def pass_tracestate(value: str | None) -> str | None:
    """Return ``tracestate`` as the next hop should get it, or None to send none.

    An invalid list (a malformed or duplicated key, more than 32 members) is dropped whole;
    a valid one longer than 512 characters loses members over 128 characters first, then
    members from the end, as the specification recommends.
    """
    if not value or len(value) > _TRACESTATE_READ_LIMIT:
        return None
    members = [m.strip(" \t") for m in value.split(",")]
    members = [m for m in members if m]
    if not members or len(members) > _TRACESTATE_MEMBERS:
        return None
    keys = set()
    for member in members:
        match = _MEMBER.fullmatch(member)
        if match is None or match.group(1) in keys:
            return None
        keys.add(match.group(1))
    return _truncate(members) or None


def _truncate(members: list[str]) -> str:
    text = ",".join(members)
    if len(text) <= TRACESTATE_MAX:
        return text
    members = [m for m in members if len(m) <= _TRACESTATE_BIG_MEMBER]
    while members and len(",".join(members)) > TRACESTATE_MAX:
        members.pop()
    return ",".join(members)


def _hop(parent: TraceParent) -> TraceParent:
    return TraceParent(parent.trace_id, random_hex(8), parent.flags)
