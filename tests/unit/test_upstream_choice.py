"""The upstream client takes its targets from the picker it is given, and reports each try's
outcome to it; gw.upstream knows nothing of gw.health (the arrow points one way)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Collection

from gw.core.retry import RetryPolicy
from gw.errors import UpstreamUnavailable
from gw.upstream.choice import Choice
from gw.upstream.client import UpstreamClient, UpstreamRequest
from gw.upstream.spec import Target, UpstreamSpec
from tests.support.upstream import Upstream


class RecordedChoice:
    def __init__(self, index: int, outcomes: list[tuple[int, str]]) -> None:
        self.target_index = index
        self._outcomes = outcomes

    def done(self, ok: bool, kind: str = "ok") -> None:
        self._outcomes.append((self.target_index, kind if not ok else "ok"))

    def answered(self, status: int) -> None:
        self._outcomes.append((self.target_index, f"status {status}"))

    def failed(self, ex: BaseException) -> None:
        self._outcomes.append((self.target_index, type(ex).__name__))


class ScriptedPicker:
    """Pick the targets in the order given, skipping those the request asks to avoid."""

    def __init__(self, order: list[int]) -> None:
        self.order = order
        self.outcomes: list[tuple[int, str]] = []
        self.avoided: list[list[int]] = []

    def pick(self, key: str | None = None, avoid: Collection[int] = ()) -> Choice:
        self.avoided.append(sorted(avoid))
        index = next(i for i in self.order if i not in avoid)
        return RecordedChoice(index, self.outcomes)


def refusing_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spec_for(ports: list[int]) -> UpstreamSpec:
    targets = tuple(Target("http", "127.0.0.1", port, "") for port in ports)
    return UpstreamSpec("orders", targets, 1.0, 5.0, 2, False)


def test_each_try_goes_to_the_picked_target_and_its_answer_is_reported(
    make_upstream: Callable[[], Upstream],
) -> None:
    first, second = make_upstream(), make_upstream()
    picker = ScriptedPicker([1, 0])
    client = UpstreamClient(spec_for([first.port, second.port]), picker)
    response = client.send(UpstreamRequest("GET", "/orders", {}))
    assert b"".join(response.body())
    assert (first.count(), second.count()) == (0, 1)
    assert picker.outcomes == [(1, "status 200")]


def test_a_refused_try_is_reported_and_the_retry_avoids_its_target(
    make_upstream: Callable[[], Upstream],
) -> None:
    good = make_upstream()
    picker = ScriptedPicker([0, 1])
    client = UpstreamClient(spec_for([refusing_port(), good.port]), picker)
    response = client.send(UpstreamRequest("GET", "/orders", {}, policy=RetryPolicy(attempts=2)))
    assert response.status == 200
    response.abandon()
    assert picker.avoided == [[], [0]]
    assert picker.outcomes[0] == (0, UpstreamUnavailable.__name__)
