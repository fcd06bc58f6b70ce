"""The differential framing check: what gw sent upstream, read by h11, against what gw answered
and against what h11 reads from the client's own bytes.

Invariant (DESIGN "Framing at both edges"): the requests h11 reads from the bytes gw sent
upstream are exactly the requests whose upstream answers gw passed to the client, in order, and
they are a prefix of the requests h11 reads from the client's bytes. Any disagreement is a
desync. On top: no request hidden in another (``/smuggled/...``) reaches the upstream, and no
field the client sent only as a trailer reaches the upstream's header section.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.conformance.framing import TRAILER_MARK, read_requests
from tests.support.recorder import Recorded, Recorder
from tests.support.wire import Exchange, exchange


@dataclass
class Verdict:
    problems: list[str]
    exchange: Exchange
    upstream: list[Recorded]

    def explain(self, data: bytes) -> str:
        got = [(r.seq, r.method, r.target, r.body[:40]) for r in self.upstream]
        return (
            "\n".join(self.problems)
            + f"\nclient sent: {data!r}\nclient got: {self.exchange.statuses}"
            + f"\nupstream got: {got}"
        )


def differential(
    port: int,
    data: bytes,
    recorder: Recorder,
    *,
    half_close: bool = True,
    timeout: float = 4.0,
    after_refusal: frozenset[str] = frozenset(),
) -> Verdict:
    """Send ``data`` on one connection to ``port`` and check the invariant.

    ``after_refusal``: targets that may still be forwarded after the message h11 refuses,
    for a front end (nginx) that reads that message by its Content-Length, refuses or passes
    it, and goes on with the next one. gw alone must close instead, so it gets none.
    """
    reading = read_requests(data)
    mark = recorder.mark()
    errors_before = len(recorder.errors())
    expect = max(1, len(reading.requests))
    result = exchange(port, data, expect=expect, half_close=half_close, timeout=timeout)
    recorder.settle(mark)
    upstream = recorder.since(mark)
    problems = []
    for number, error, raw in recorder.errors()[errors_before:]:
        problems.append(f"h11 could not read upstream connection {number}: {error}; {raw[-300:]!r}")
    answered = [a.header("x-upstream-seq") for a in result.answers if a.header("x-upstream-seq")]
    if answered != [str(r.seq) for r in upstream]:
        problems.append(
            f"desync: gw answered with upstream answers {answered}, but the upstream read "
            f"requests {[r.seq for r in upstream]}"
        )
    sent = [(r.method, r.target, r.body) for r in upstream]
    reference = [q.key for q in reading.requests]
    prefix = sent[: len(reference)]
    tail = [s for s in sent[len(reference) :] if s[1] not in after_refusal]
    if prefix != reference[: len(prefix)] or tail:
        problems.append(
            f"desync: upstream read {[s[:2] for s in sent]}, not a prefix of what h11 reads from "
            f"the client ({[k[:2] for k in reference]}; h11 stopped: {reading.stopped})"
        )
    for number, tail in recorder.midway(mark):
        problems.append(
            f"desync: gw left part of a request on upstream connection {number} and kept it "
            f"open (the next request on it becomes the rest): ...{tail!r}"
        )
    problems += _hidden_requests(upstream) + _trailer_leaks(upstream)
    return Verdict(problems, result, upstream)


def _hidden_requests(upstream: list[Recorded]) -> list[str]:
    return [
        f"smuggled request reached the upstream: {r.method} {r.target} {dict(r.headers)}"
        for r in upstream
        if "/smuggled/" in r.target
    ]


def _trailer_leaks(upstream: list[Recorded]) -> list[str]:
    leaks = []
    for record in upstream:
        for name, value in record.headers:
            if TRAILER_MARK in value or (name == "content-length" and value == "999"):
                leaks.append(f"trailer field reached the upstream as a header: {name}: {value}")
    return leaks
