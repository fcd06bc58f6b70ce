"""``Gateway.handle`` in process, through a fake transport: every stage, no subprocess.

What a client would see (status, headers, body) and what each upstream received and how
often. The upstreams speak real HTTP/1.1 (h11) over socket pairs, so gw's framing, pooling
and response reading run as in production.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from gw.auth import hash_api_key
from gw.core.ingress import exchange_from, request_from
from gw.upstream.client import UpstreamRequest
from tests.metrics.scrape import samples, value
from tests.pipeline.harness import InProcessGateway, build_environ
from tests.support.fake_transport import FakeTransport, Received, json_answer

KEY = "alice-key-" + "a" * 24
SVC = "svc.test:8001"
BURST = 32


@pytest.fixture
def transport() -> Iterator[FakeTransport]:
    fake = FakeTransport()
    yield fake
    fake.close()


def gateway(
    transport: FakeTransport, routes: list[dict[str, object]], **extra: object
) -> InProcessGateway:
    upstreams = {
        name: {"targets": [f"http://{netloc}"]}
        for name, netloc in (
            ("svc", SVC),
            ("users", "users.test:8002"),
            ("orders", "orders.test:8003"),
        )
    }
    return InProcessGateway({"upstreams": upstreams, "routes": routes, **extra}, transport)


# -- routing and rewrites ---------------------------------------------------------------------


def test_the_most_specific_route_wins_and_its_prefix_is_rewritten(transport: FakeTransport) -> None:
    svc = transport.add(SVC)
    gw = gateway(
        transport,
        [
            {"name": "all", "path": "/api/**", "upstream": "svc"},
            {"name": "users", "path": "/api/users/**", "upstream": "svc", "strip_prefix": "/api"},
        ],
    )
    answer = gw.request("GET", "/api/users/7?x=1")
    assert answer.status == 200
    assert answer.json() == {"path": "/users/7?x=1", "method": "GET"}
    assert gw.request("GET", "/api/other").json()["path"] == "/api/other"
    assert [r.target for r in svc.received] == ["/users/7?x=1", "/api/other"]


def test_no_route_is_a_json_404_and_reaches_no_upstream(transport: FakeTransport) -> None:
    svc = transport.add(SVC)
    gw = gateway(transport, [{"name": "api", "path": "/api/**", "upstream": "svc"}])
    answer = gw.request("GET", "/elsewhere")
    assert answer.status == 404
    assert answer.json()["error"] == "route_not_found"
    assert answer.header("X-Request-Id")
    assert svc.received == []


def test_a_dot_segment_cannot_climb_out_of_a_route(transport: FakeTransport) -> None:
    svc = transport.add(SVC)
    gw = gateway(transport, [{"name": "pub", "path": "/public/**", "upstream": "svc"}])
    assert gw.request("GET", "/public/../admin").status == 404
    assert gw.request("GET", "/public/a/%2e%2e/b").json()["path"] == "/public/b"
    assert [r.target for r in svc.received] == ["/public/b"]


# -- what crosses to the upstream ---------------------------------------------------------------


def test_the_upstream_gets_gw_framing_and_forwarding_headers_not_the_clients(
    transport: FakeTransport,
) -> None:
    svc = transport.add(SVC)
    gw = gateway(transport, [{"name": "api", "path": "/api/**", "upstream": "svc"}])
    answer = gw.request(
        "POST",
        "/api/items",
        {
            "Content-Type": "application/json",
            "X-User-Id": "admin",  # gateway-owned: never taken from a client
            "X-Forwarded-For": "6.6.6.6",  # the peer is no trusted proxy
            "Keep-Alive": "timeout=5",
            "X-Request-Id": "client-chosen-id-1",
        },
        body=b'{"a": 1}',
        peer="10.1.2.3",
    )
    assert answer.status == 200
    [received] = svc.received
    assert received.body == b'{"a": 1}'
    assert received.headers["content-length"] == "8"
    assert "x-user-id" not in received.headers and "keep-alive" not in received.headers
    assert received.headers["x-forwarded-for"] == "10.1.2.3"
    assert received.headers["x-real-ip"] == "10.1.2.3"
    assert received.headers["x-request-id"] == "client-chosen-id-1"
    assert received.headers["host"] == SVC
    assert answer.header("X-Request-Id") == "client-chosen-id-1"


def test_a_body_over_the_limit_is_413_before_any_upstream(transport: FakeTransport) -> None:
    svc = transport.add(SVC)
    gw = gateway(
        transport,
        [{"name": "api", "path": "/api/**", "upstream": "svc"}],
        server={"max_body_bytes": 4},
    )
    answer = gw.request("POST", "/api/x", body=b"12345")
    assert answer.status == 413
    assert answer.json()["error"] == "body_too_large"
    assert answer.header("Connection") == "close"
    assert svc.received == []


def test_the_answers_hop_by_hop_fields_and_those_its_connection_names_stay_behind(
    transport: FakeTransport,
) -> None:
    """RFC 9110 section 7.6.1: a proxy drops the hop-by-hop fields of the answer it passes on,
    and every field its Connection names, whatever case either is spelt in."""

    def answer(received: Received) -> tuple[int, list[tuple[str, str]], bytes]:
        fields = [
            ("Connection", "X-Internal-TOKEN, Keep-Alive"),
            ("x-internal-token", "s3cret"),
            ("KEEP-ALIVE", "timeout=5"),
            ("X-Kept", "yes"),
            ("Content-Type", "text/plain"),
        ]
        return 200, fields, b"ok"

    transport.add(SVC, answer)
    gw = gateway(transport, [{"name": "api", "path": "/api/**", "upstream": "svc"}])
    got = gw.request("GET", "/api/x")
    assert (got.status, got.body, got.header("X-Kept")) == (200, b"ok", "yes")
    names = {n.lower() for n, _ in got.headers}
    assert not names & {"connection", "keep-alive", "x-internal-token"}


# -- authentication --------------------------------------------------------------------------


def keyed(transport: FakeTransport) -> InProcessGateway:
    return gateway(
        transport,
        [
            {"name": "api", "path": "/api/**", "upstream": "svc"},
            {"name": "open", "path": "/open/**", "upstream": "svc", "auth": "none"},
        ],
        auth={
            "type": "api_key",
            "api_keys": {"keys": [{"id": "k1", "sha256": hash_api_key(KEY), "consumer": "alice"}]},
        },
    )


def test_a_request_without_a_valid_key_never_reaches_the_upstream(transport: FakeTransport) -> None:
    svc = transport.add(SVC)
    gw = keyed(transport)
    assert gw.request("GET", "/api/x").status == 401
    wrong = gw.request("GET", "/api/x", {"X-API-Key": "nope-" + "n" * 30})
    assert wrong.status == 401 and wrong.json()["error"] == "invalid_token"
    assert svc.received == []
    assert gw.request("GET", "/open/x").status == 200  # auth: none
    assert len(svc.received) == 1


def test_the_verified_caller_is_forwarded(transport: FakeTransport) -> None:
    svc = transport.add(SVC)
    gw = keyed(transport)
    assert gw.request("GET", "/api/x", {"X-API-Key": KEY}).status == 200
    [received] = svc.received
    assert received.headers["x-user-id"] == "alice"


# -- rate limits -----------------------------------------------------------------------------


def test_a_rate_limit_lets_exactly_its_burst_through(transport: FakeTransport) -> None:
    svc = transport.add(SVC)
    gw = gateway(
        transport,
        [{"name": "api", "path": "/api/**", "upstream": "svc"}],
        rate_limiting={"default": {"requests_per_minute": 3, "key": "client_ip"}},
    )
    answers = [gw.request("GET", f"/api/{i}", peer="10.9.9.9") for i in range(5)]
    assert [a.status for a in answers] == [200, 200, 200, 429, 429]
    refused = answers[3]
    assert refused.json()["error"] == "rate_limit_exceeded"
    assert refused.header("Retry-After")
    assert len(svc.received) == 3
    assert gw.request("GET", "/api/other", peer="10.8.8.8").status == 200  # another client


def test_a_stage_field_the_upstream_already_sent_is_not_added_again(
    transport: FakeTransport,
) -> None:
    """The upstream's own field wins, in any spelling; the stage's other fields are added."""

    def limited(received: Received) -> tuple[int, list[tuple[str, str]], bytes]:
        own = [("x-ratelimit-LIMIT", "7")] if received.target.endswith("/own") else []
        return 200, [*own, ("Vary", "Accept")], b"ok"

    transport.add(SVC, limited)
    gw = gateway(
        transport,
        [{"name": "api", "path": "/api/**", "upstream": "svc"}],
        rate_limiting={"default": {"requests_per_minute": 3, "key": "client_ip"}},
    )
    own = gw.request("GET", "/api/own")
    names = [name.lower() for name, _ in own.headers]
    assert names.count("x-ratelimit-limit") == 1 and names.count("x-ratelimit-remaining") == 1
    assert own.header("X-RateLimit-Limit") == "7"
    assert gw.request("GET", "/api/other").header("X-RateLimit-Limit") == "3"


# -- cache -----------------------------------------------------------------------------------


def test_a_cached_answer_is_served_without_the_upstream_and_per_caller(
    transport: FakeTransport,
) -> None:
    svc = transport.add(SVC, lambda r: json_answer({"for": r.headers.get("x-user-id")}))
    gw = gateway(
        transport,
        [{"name": "me", "path": "/me", "upstream": "svc", "cache": {"ttl": 30}}],
        auth={
            "type": "api_key",
            "api_keys": {
                "keys": [
                    {"id": "k1", "sha256": hash_api_key(KEY), "consumer": "alice"},
                    {"id": "k2", "sha256": hash_api_key("bob-key-" + "b" * 26), "consumer": "bob"},
                ]
            },
        },
    )
    first = gw.request("GET", "/me", {"X-API-Key": KEY})
    again = gw.request("GET", "/me", {"X-API-Key": KEY})
    bob = gw.request("GET", "/me", {"X-API-Key": "bob-key-" + "b" * 26})
    assert (first.header("X-Cache"), again.header("X-Cache")) == ("MISS", "HIT")
    assert first.json() == again.json() == {"for": "alice"}
    assert bob.json() == {"for": "bob"} and bob.header("X-Cache") == "MISS"
    assert len(svc.received) == 2


def test_cache_answers_are_counted_by_what_the_stage_did_not_what_the_upstream_said(
    transport: FakeTransport,
) -> None:
    # The upstream claims HIT on every answer; the counter follows the stage's own verdict.
    transport.add(SVC, lambda r: (200, [("X-Cache", "HIT")], b"payload"))
    gw = gateway(
        transport,
        [{"name": "counted", "path": "/counted/**", "upstream": "svc", "cache": {"ttl": 30}}],
        metrics={"enabled": True},
    )
    metrics = gw.gateway.metrics
    assert metrics is not None

    def counts() -> dict[str, float]:
        found = samples(metrics.render({})[1].decode())
        name = "gw_cache_lookups_total"
        words = ("hit", "miss", "bypass")
        return {w: value(found, name, route="counted", result=w) or 0.0 for w in words}

    before = counts()
    gw.request("GET", "/counted/a")  # stored
    gw.request("GET", "/counted/a")  # from the store
    gw.request("POST", "/counted/a", body=b"x")  # never cached
    after = counts()
    assert {w: after[w] - before[w] for w in after} == {"hit": 1, "miss": 1, "bypass": 1}


def test_a_request_is_in_flight_while_its_upstream_answers(transport: FakeTransport) -> None:
    seen: list[float] = []

    def in_flight() -> float:
        assert metrics is not None
        return value(samples(metrics.render({})[1].decode()), "gw_requests_in_flight") or 0.0

    def answer(_: Received) -> tuple[int, list[tuple[str, str]], bytes]:
        seen.append(in_flight())
        return 200, [], b"payload"

    transport.add(SVC, answer)
    routes: list[dict[str, object]] = [{"name": "held", "path": "/held/**", "upstream": "svc"}]
    gw = gateway(transport, routes, metrics={"enabled": True})
    metrics = gw.gateway.metrics
    before = in_flight()  # requests other tests left open, if any
    assert gw.request("GET", "/held/a").body == b"payload"
    assert seen == [before + 1]
    assert in_flight() == before


# -- composition -----------------------------------------------------------------------------


def test_an_aggregate_merges_its_parts_and_names_a_failed_optional_one(
    transport: FakeTransport,
) -> None:
    transport.add("users.test:8002", lambda r: json_answer({"id": r.target.rsplit("/", 1)[1]}))
    orders = transport.add("orders.test:8003", lambda r: json_answer([{"order": 1}]))
    gw = gateway(
        transport,
        [
            {
                "name": "home",
                "path": "/home/{id}",
                "aggregate": {
                    "parts": [
                        {"key": "user", "upstream": "users", "path": "/users/{params.id}"},
                        {"key": "orders", "upstream": "orders", "path": "/orders?u={params.id}"},
                        {"key": "extra", "upstream": "svc", "path": "/x", "required": False},
                    ]
                },
            }
        ],
    )
    answer = gw.request("GET", "/home/42")
    assert answer.status == 200
    document = answer.json()
    assert document["user"] == {"id": "42"} and document["orders"] == [{"order": 1}]
    assert document["extra"] is None  # svc is not registered: its connection is refused
    assert [r.target for r in orders.received] == ["/orders?u=42"]


# -- errors ----------------------------------------------------------------------------------


def test_an_unreachable_upstream_is_a_json_502(transport: FakeTransport) -> None:
    gw = gateway(transport, [{"name": "api", "path": "/api/**", "upstream": "svc"}])
    answer = gw.request("GET", "/api/x")
    assert answer.status == 502
    body = answer.json()
    assert body["error"] == "upstream_unavailable" and body["message"]


def test_a_query_with_a_raw_space_is_refused_before_routing(transport: FakeTransport) -> None:
    svc = transport.add(SVC)
    gw = gateway(transport, [{"name": "api", "path": "/api/**", "upstream": "svc"}])
    answer = gw.request("GET", "/api/x?a=b c")
    assert answer.status == 400
    assert answer.json()["error"] == "invalid_query"
    assert svc.received == []


def test_an_upstream_answer_streams_through_with_its_status_and_headers(
    transport: FakeTransport,
) -> None:
    def teapot(received: Received) -> tuple[int, list[tuple[str, str]], bytes]:
        return 418, [("Content-Type", "text/plain"), ("X-Upstream", "yes")], b"short and stout"

    transport.add(SVC, teapot)
    gw = gateway(transport, [{"name": "api", "path": "/api/**", "upstream": "svc"}])
    answer = gw.request("GET", "/api/pot")
    assert (answer.status, answer.body) == (418, b"short and stout")
    assert answer.header("X-Upstream") == "yes"
    assert answer.header("X-Request-Id")


def test_connections_to_an_upstream_are_reused(transport: FakeTransport) -> None:
    svc = transport.add(SVC)
    gw = gateway(transport, [{"name": "api", "path": "/api/**", "upstream": "svc"}])
    for i in range(5):
        assert gw.request("GET", f"/api/{i}").status == 200
    assert len(svc.received) == 5 and svc.connections == 1


def test_an_error_body_is_the_one_json_shape(transport: FakeTransport) -> None:
    gw = gateway(transport, [{"name": "api", "path": "/api/**", "upstream": "svc"}])
    answer = gw.request("DELETE", "/nowhere")
    assert answer.header("Content-Type") == "application/json"
    body = json.loads(answer.body)
    assert set(body) >= {"error", "message"}


def test_a_burst_leaves_its_connections_open_for_the_next(transport: FakeTransport) -> None:
    """32 requests in flight at once, twice: the second burst reuses the first's connections
    (with pool_size 16, as before, 16 of them were closed and opened again)."""
    in_flight = threading.Barrier(BURST, timeout=10)

    def held(received: Received) -> tuple[int, list[tuple[str, str]], bytes]:
        in_flight.wait()  # every request of the burst is at the upstream at once
        return json_answer({"ok": True})

    svc = transport.add(SVC, held)
    gw = gateway(transport, [{"name": "api", "path": "/api/**", "upstream": "svc"}])
    for _ in range(2):
        with ThreadPoolExecutor(BURST) as pool:
            answers = list(pool.map(lambda i: gw.request("GET", f"/api/{i}"), range(BURST)))
        assert [a.status for a in answers] == [200] * BURST
    assert len(svc.received) == 2 * BURST
    assert svc.connections == BURST


def test_each_route_runs_only_the_stages_it_configures(transport: FakeTransport) -> None:
    """Issue 15's target 8: stages compiled per route at start, in pipeline order."""
    gw = gateway(
        transport,
        [
            {"name": "plain", "path": "/plain/**", "upstream": "svc", "auth": "none"},
            {
                "name": "everything",
                "path": "/all/**",
                "upstream": "svc",
                "allow_from": ["10.0.0.0/8"],
                "cors": {"allowed_origins": ["https://app.example"]},
                "cache": {"ttl": 5},
            },
        ],
        auth={
            "type": "api_key",
            "api_keys": {"keys": [{"id": "k1", "sha256": hash_api_key(KEY), "consumer": "alice"}]},
        },
        cache_store={"backend": "shared"},
    )
    plans = gw.gateway.plans

    def names(stages: tuple[object, ...]) -> list[str]:
        return [getattr(stage, "__name__", "?") for stage in stages]

    assert names(plans["plain"].checks) == []
    assert names(plans["plain"].answers) == ["_proxied"]
    assert not plans["plain"].admits
    assert names(plans["everything"].checks) == ["_addresses", "_cors", "_authenticate"]
    assert names(plans["everything"].answers) == ["_cached", "_proxied"]


def test_a_routes_timeouts_and_deadlines_reach_the_upstream_request(
    transport: FakeTransport,
) -> None:
    """Each of the route's settings lands in its own field of the upstream request."""
    transport.add(SVC)
    gw = gateway(
        transport,
        [
            {
                "name": "timed",
                "path": "/t/**",
                "upstream": "svc",
                "read_timeout": 1.5,
                "connect_timeout": 0.25,
                "stream_timeout": 90,
            }
        ],
        server={"deadline": 7},
    )
    client = gw.gateway.clients["svc"]
    sent: list[UpstreamRequest] = []
    send = client.send
    client.send = lambda outgoing: sent.append(outgoing) or send(outgoing)  # type: ignore[method-assign]
    assert gw.request("POST", "/t/x", body=b"abc").status == 200
    (outgoing,) = sent
    assert (outgoing.method, outgoing.path, outgoing.body) == ("POST", "/t/x", b"abc")
    assert outgoing.headers["Content-Length"] == "3" and not outgoing.chunked
    assert (outgoing.read_timeout, outgoing.connect_timeout) == (1.5, 0.25)
    assert outgoing.policy is client.spec.retry
    assert outgoing.body_deadline - outgoing.deadline == pytest.approx(90 - 7)
    assert outgoing.balance_key is None and outgoing.upgrade is False


@pytest.mark.parametrize("shaping", [{}, {"compression": {"min_bytes": 1024, "level": 6}}])
def test_an_answer_never_changes_the_header_list_a_stage_hands_it(
    transport: FakeTransport, shaping: dict[str, object]
) -> None:
    """A stage may answer with a list it keeps (a cached or replayed entry's): the gateway's
    own fields (the request id, the security headers) go on a copy, with or without a shaper,
    or each answer from that list would carry every earlier request's id."""
    transport.add(SVC)
    gw = gateway(transport, [{"name": "api", "path": "/api/**", "upstream": "svc"}], **shaping)
    kept = [("Content-Type", "text/plain"), ("ETag", '"e"')]
    for _ in range(2):
        environ = build_environ("GET", "/api/x", {}, b"", "127.0.0.1")
        exchange = exchange_from(environ, gw.gateway.proxies)
        request = request_from(exchange, environ, gw.gateway.owned)
        outcome = gw.gateway._respond(exchange, 200, kept, [b"x"], request)
        assert [v for n, v in outcome.headers if n == "X-Request-Id"] == [exchange.request_id]
    assert kept == [("Content-Type", "text/plain"), ("ETag", '"e"')]
