"""Differential framing gates, gw alone (every worker class): the smuggling classes one by one,
then generated and mutated pipelined streams (hypothesis).

See ``tests.conformance.differential`` for the invariant. Each stream goes on one fresh
connection to a long-lived gateway (one per worker class); the client half-closes after
sending, so a server waiting for bytes that never come gives up at once.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.conformance.conftest import GatewayPool
from tests.conformance.differential import differential
from tests.conformance.framing import (
    SMUGGLING,
    TRAILER_MARK,
    Message,
    attack_stream,
    request,
    smuggled,
    stream,
)
from tests.support.recorder import Recorder

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("GW_CONFORMANCE_EXAMPLES", "60"))


@pytest.mark.parametrize("name", sorted(SMUGGLING))
def test_smuggling_class_never_desyncs_gw_from_its_upstream(
    name: str, worker: str, gateways: GatewayPool, recorder: Recorder
) -> None:
    """Whatever gw does with the attack, the upstream reads what gw answered, and nothing more."""
    data = attack_stream(name)
    verdict = differential(gateways(worker).port, data, recorder)
    assert not verdict.problems, f"{name} under {worker}:\n{verdict.explain(data)}"


# -- generated streams ------------------------------------------------------------------------


@st.composite
def cased(draw: st.DrawFn, name: str) -> bytes:
    """``name`` in a random letter case (header names are case-insensitive)."""
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    return "".join(c.upper() if f else c.lower() for c, f in zip(name, flips, strict=True)).encode()


PAYLOADS = st.one_of(
    st.binary(max_size=48),
    st.sampled_from([smuggled("payload"), b"0\r\n\r\n", b"\r\n\r\n", b"GET / HTTP/1.1\r\n"]),
)


@st.composite
def plain_message(draw: st.DrawFn, index: int) -> Message:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]))
    path = f"/d/{index}" + draw(st.sampled_from(["", "?q=1", "?a=b&a=c"]))
    extra = (draw(cased("X-Seq")) + b": %d" % index,)
    if draw(st.booleans()):
        extra += (draw(cased("Accept")) + b": */*",)
    if draw(st.integers(0, 7)) == 0:  # the connection ends here: what follows is never read
        extra += (draw(cased("Connection")) + b": close",)
    host = draw(cased("Host"))
    framing = draw(st.sampled_from(["none", "length", "chunked"]))
    payload = draw(PAYLOADS)
    if framing == "length":
        return request(method, path, body=payload, extra=extra, host_name=host)
    if framing == "chunked":
        cut = draw(st.integers(0, len(payload)))
        trailers = (f"X-Trailer-{index}: {TRAILER_MARK}".encode(),) if draw(st.booleans()) else ()
        return request(
            method, path, chunks=[payload[:cut], payload[cut:]], trailers=trailers,
            extra=extra, host_name=host,
        )  # fmt: skip
    return request(method, path, extra=extra, host_name=host)


@st.composite
def streams(draw: st.DrawFn) -> list[Message]:
    """1-4 pipelined requests; sometimes one of them replaced by a smuggling payload."""
    count = draw(st.integers(1, 4))
    messages = [draw(plain_message(i)) for i in range(count)]
    mutation = draw(st.none() | st.sampled_from(sorted(SMUGGLING)))
    if mutation is not None:
        at = draw(st.integers(0, count - 1))
        messages[at] = SMUGGLING[mutation](f"gen-{at}")
    return messages


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same examples on every run: deterministic in CI
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: bounded time when it fails
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(messages=streams())
def test_generated_streams_reach_the_upstream_as_gw_answered_them(
    messages: list[Message], worker: str, gateways: GatewayPool, recorder: Recorder
) -> None:
    """The upstream reads exactly the requests gw answered, a prefix of h11's reading."""
    data = stream(messages)
    verdict = differential(gateways(worker).port, data, recorder)
    assert not verdict.problems, f"under {worker}:\n{verdict.explain(data)}"
