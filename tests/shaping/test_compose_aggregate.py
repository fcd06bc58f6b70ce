"""Aggregate routes against real upstreams on 127.0.0.1: parallel, deterministic, and strict
about which parts may fail."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from gw.core.exchange import Outcome
from gw.errors import UpstreamBadResponse, UpstreamTimeout, UpstreamUnavailable
from gw.shaping.compose import MISSING_PARTS_HEADER, Aggregator, compile_aggregate
from gw.shaping.parts import PartFailed
from gw.shaping.settings import AggregateSettings
from gw.shaping.templates import MissingParameter
from gw.upstream.client import UpstreamClient
from tests.shaping.json_upstream import JsonUpstream, Reply
from tests.support.upstream import wait_for

Start = Callable[..., JsonUpstream]


@dataclass(frozen=True)
class Who:
    subject: str
    role: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)


def part(key: str, upstream: str, path: str, **extra: Any) -> dict[str, Any]:
    return {"key": key, "upstream": upstream, "path": path, **extra}


def run(
    aggregator: Aggregator,
    parts: list[dict[str, Any]],
    clients: Mapping[str, UpstreamClient],
    query: str = "",
    headers: Mapping[str, str] | None = None,
    **settings: Any,
) -> Outcome:
    spec = compile_aggregate(
        AggregateSettings.model_validate({"parts": parts, **settings}), set(clients)
    )
    return aggregator.run(spec, {}, query, Who("usr_8a3f"), headers or {}, clients)


def document(outcome: Outcome) -> tuple[bytes, Any]:
    body = b"".join(outcome.body)
    return body, json.loads(body)


def header(outcome: Outcome, name: str) -> str | None:
    return next((v for n, v in outcome.headers if n.lower() == name.lower()), None)


def seed_home(json_upstream: Start, delay: float) -> dict[str, UpstreamClient]:
    users = json_upstream({"/users/usr_8a3f": Reply({"id": "usr_8a3f"}, delay=delay)})
    orders = json_upstream({"/orders": Reply([{"order_id": "ord_x7k9"}], delay=delay)})
    products = json_upstream({"/recommendations/usr_8a3f": Reply([{"p": 1}], delay=delay)})
    return {
        "users": users.client("users"),
        "orders": orders.client("orders"),
        "products": products.client("products"),
    }


SEED_HOME = [
    part("user", "users", "/users/{identity.sub}", required=True),
    part("recent_orders", "orders", "/orders?user={identity.sub}&limit={query.limit:-3}"),
    part("recommendations", "products", "/recommendations/{identity.sub}", required=False),
]


def test_latency_is_the_slowest_part_not_the_sum(
    json_upstream: Start, aggregator: Aggregator
) -> None:
    """Three parts of ~200 ms each finish together in about 200 ms, not 600 ms."""
    clients = seed_home(json_upstream, delay=0.2)
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        outcome = run(aggregator, SEED_HOME, clients)
        timings.append(time.perf_counter() - started)
        assert outcome.status == 200
    print(f"\naggregate of 3 x 200 ms parts: {', '.join(f'{t * 1000:.0f} ms' for t in timings)}")
    assert max(timings) < 0.45


def test_merge_is_in_config_order_whatever_answers_first(
    json_upstream: Start, aggregator: Aggregator
) -> None:
    slow = json_upstream({"/a": Reply({"n": 1}, delay=0.15)})
    fast = json_upstream({"/b": Reply({"n": 2})})
    clients = {"slow": slow.client("slow"), "fast": fast.client("fast")}
    parts = [part("first", "slow", "/a"), part("second", "fast", "/b")]
    outcome = run(aggregator, parts, clients)
    body, _ = document(outcome)
    assert body == b'{"first":{"n":1},"second":{"n":2}}'
    assert outcome.headers == [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
    ]


def test_seed_home_document_has_every_key_and_sends_the_templates(
    json_upstream: Start, aggregator: Aggregator
) -> None:
    clients = seed_home(json_upstream, delay=0)
    outcome = run(aggregator, SEED_HOME, clients, query="limit=5")
    _, merged = document(outcome)
    assert list(merged) == ["user", "recent_orders", "recommendations"]
    assert merged["recent_orders"] == [{"order_id": "ord_x7k9"}]
    assert header(outcome, MISSING_PARTS_HEADER) is None and "_missing" not in merged


def test_failed_optional_part_is_null_and_named_as_missing(
    json_upstream: Start, aggregator: Aggregator
) -> None:
    good = json_upstream({"/u": Reply({"id": 1})})
    broken = json_upstream({"/r": Reply({"error": "boom"}, status=500)})
    not_json = json_upstream({"/x": Reply(b"<html>", content_type="text/html")})
    clients = {"good": good.client(), "broken": broken.client(), "html": not_json.client()}
    parts = [
        part("user", "good", "/u"),
        part("recommendations", "broken", "/r", required=False),
        part("extras", "html", "/x", required=False),
    ]
    outcome = run(aggregator, parts, clients)
    _, merged = document(outcome)
    assert outcome.status == 200
    assert merged == {
        "user": {"id": 1},
        "recommendations": None,
        "extras": None,
        "_missing": ["recommendations", "extras"],
    }
    assert header(outcome, MISSING_PARTS_HEADER) == "recommendations, extras"


def test_slow_optional_part_is_dropped_at_its_own_timeout(
    json_upstream: Start, aggregator: Aggregator
) -> None:
    good = json_upstream({"/u": Reply({"id": 1})})
    slow = json_upstream({"/r": Reply([1], delay=2.0)})
    clients = {"good": good.client(), "slow": slow.client()}
    parts = [part("user", "good", "/u"), part("recs", "slow", "/r", required=False, timeout=0.2)]
    started = time.perf_counter()
    outcome = run(aggregator, parts, clients)
    elapsed = time.perf_counter() - started
    assert document(outcome)[1] == {"user": {"id": 1}, "recs": None, "_missing": ["recs"]}
    assert 0.15 < elapsed < 1.0


def test_too_large_optional_part_is_missing(json_upstream: Start, aggregator: Aggregator) -> None:
    big = json_upstream({"/big": Reply({"blob": "x" * 5000})})
    clients = {"big": big.client()}
    parts = [part("blob", "big", "/big", required=False)]
    outcome = run(aggregator, parts, clients, max_part_bytes=1000)
    assert document(outcome)[1] == {"blob": None, "_missing": ["blob"]}


def test_required_part_error_status_fails_the_route_naming_the_part(
    json_upstream: Start, aggregator: Aggregator
) -> None:
    users = json_upstream({"/u": Reply({"error": "nope"}, status=503)})
    orders = json_upstream()
    clients = {"users": users.client(), "orders": orders.client()}
    parts = [part("orders", "orders", "/o"), part("user", "users", "/u")]
    with pytest.raises(PartFailed) as info:
        run(aggregator, parts, clients)
    error = info.value.to_dict()
    assert info.value.status == 502
    assert error["error"] == "part_failed"
    assert error["part"] == "user" and error["upstream_status"] == 503
    assert "aggregate part 'user'" in error["message"]


def test_required_part_timeout_is_a_504_at_the_part_deadline(
    json_upstream: Start, aggregator: Aggregator
) -> None:
    slow = json_upstream({"/u": Reply({"id": 1}, delay=3.0)})
    clients = {"users": slow.client()}
    started = time.perf_counter()
    with pytest.raises(UpstreamTimeout) as info:
        run(aggregator, [part("user", "users", "/u", timeout=0.3)], clients)
    assert 0.25 < time.perf_counter() - started < 1.5
    assert info.value.status == 504 and info.value.to_dict()["part"] == "user"


def test_whole_aggregate_deadline_caps_every_part(
    json_upstream: Start, aggregator: Aggregator
) -> None:
    slow = json_upstream({"/u": Reply({"id": 1}, delay=3.0)})
    clients = {"users": slow.client()}
    started = time.perf_counter()
    with pytest.raises(UpstreamTimeout):
        run(aggregator, [part("user", "users", "/u")], clients, timeout=0.3)
    assert time.perf_counter() - started < 1.5


def test_required_part_refused_or_not_json_is_a_502(
    json_upstream: Start, aggregator: Aggregator
) -> None:
    closed = json_upstream()
    refused = closed.client()
    closed.close()
    html = json_upstream({"/h": Reply(b"<html>", content_type="text/html")})
    with pytest.raises(UpstreamUnavailable) as refused_info:
        run(aggregator, [part("user", "users", "/u")], {"users": refused})
    with pytest.raises(UpstreamBadResponse) as html_info:
        run(aggregator, [part("page", "html", "/h")], {"html": html.client()})
    assert refused_info.value.to_dict()["error"] == "upstream_unavailable"
    assert "aggregate part 'page'" in html_info.value.message


def test_failed_route_abandons_running_parts_and_never_pools_their_connection(
    json_upstream: Start, aggregator: Aggregator
) -> None:
    """A part still running when the route fails is closed, not kept half-read for reuse."""
    failing = json_upstream({"/u": Reply({}, status=500)})
    slow = json_upstream({"/s": Reply({"late": True}, delay=0.3)})
    clients = {"failing": failing.client(), "slow": slow.client()}
    parts = [part("slow", "slow", "/s"), part("user", "failing", "/u")]
    started = time.perf_counter()
    with pytest.raises(PartFailed):
        run(aggregator, parts, clients)
    assert time.perf_counter() - started < 0.25  # did not wait for the slow part
    assert wait_for(lambda: slow.closed_connections == 1, timeout=3.0)
    # The next request to the slow upstream gets its own answer on a new connection.
    outcome = run(aggregator, [part("slow", "slow", "/s")], clients)
    assert document(outcome)[1] == {"slow": {"late": True}}
    first, second = slow.requests()
    assert first.client_port != second.client_port


def test_successful_parts_keep_their_connection_alive(
    json_upstream: Start, aggregator: Aggregator
) -> None:
    up = json_upstream({"/a": Reply({"n": 1})})
    clients = {"up": up.client()}
    for _ in range(3):
        run(aggregator, [part("a", "up", "/a")], clients)
    assert len({seen.client_port for seen in up.requests()}) == 1


def test_missing_parameter_is_a_400_before_any_upstream_call(
    json_upstream: Start, aggregator: Aggregator
) -> None:
    up = json_upstream()
    clients = {"up": up.client()}
    parts = [part("a", "up", "/a"), part("b", "up", "/b?q={query.q}")]
    with pytest.raises(MissingParameter) as info:
        run(aggregator, parts, clients)
    assert info.value.to_dict() == {
        "error": "missing_parameter",
        "message": "this request needs the query parameter 'q'",
        "parameter": "query.q",
    }
    assert up.requests() == []


def test_parts_carry_the_pipeline_headers_but_ask_for_whole_plain_json(
    json_upstream: Start, aggregator: Aggregator
) -> None:
    up = json_upstream()
    clients = {"users": up.client("users", base_path="/v2")}
    headers = {
        "X-User-Id": "usr_8a3f",
        "X-Request-Id": "req_abc12345",
        "Accept-Encoding": "gzip, br",
        "If-None-Match": '"abc"',
        "Range": "bytes=0-10",
        "Content-Length": "12",
        "Host": "users-service:3001",
    }
    run(aggregator, [part("u", "users", "/users/{identity.sub}")], clients, headers=headers)
    [seen] = up.requests()
    assert seen.target == "/v2/users/usr_8a3f"
    assert seen.headers["X-User-Id"] == "usr_8a3f"
    assert seen.headers["X-Request-Id"] == "req_abc12345"
    assert seen.headers["Accept-Encoding"] == "identity"
    assert seen.headers["Accept"] == "application/json"
    assert seen.headers["Host"] == f"127.0.0.1:{up.port}"
    for absent in ("If-None-Match", "Range", "Content-Length"):
        assert absent not in seen.headers


def test_pool_is_made_again_in_a_new_process(aggregator: Aggregator) -> None:
    """A forked worker never inherits the master's (threadless) pool."""
    first = aggregator._executor()
    aggregator._pid = -2  # what a fork looks like to the pid check
    assert aggregator._executor() is not first
    first.shutdown()
