"""Idempotency-Key through ``Gateway.handle`` in process (fake transport, real file store):
what the client reads and how many requests the upstream received."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.pipeline.harness import Answer, InProcessGateway
from tests.support.fake_transport import FakeTransport, Received
from tests.support.gateway import free_port

SVC = "svc.test:8001"
_serial = itertools.count()


@pytest.fixture(autouse=True)
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A runtime directory of the test's own: the records' store lives under it."""
    monkeypatch.setenv("GW_RUNTIME_DIR", str(tmp_path / "run"))


@pytest.fixture
def transport() -> Iterator[FakeTransport]:
    fake = FakeTransport()
    yield fake
    fake.close()


def numbered(received: Received) -> tuple[int, list[tuple[str, str]], bytes]:
    """A created resource with a fresh id: a second upstream call would show a new one."""
    body = json.dumps({"id": next(_serial), "got": received.body.decode()}).encode()
    return 201, [("Content-Type", "application/json"), ("Location", "/orders/x")], body


def gateway(
    transport: FakeTransport, idempotency: dict[str, object] | None = None, **extra: object
) -> InProcessGateway:
    route = {
        "name": "orders",
        "path": "/orders",
        "upstream": "svc",
        "idempotency": idempotency or {"ttl": "1h"},
    }
    config = {"upstreams": {"svc": {"targets": [f"http://{SVC}"]}}, "routes": [route], **extra}
    return InProcessGateway(config, transport)


def post(gw: InProcessGateway, key: str | None, body: bytes, peer: str = "127.0.0.1") -> Answer:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return gw.request("POST", "/orders", headers, body, peer=peer)


def test_a_retry_with_the_same_key_and_body_gets_the_first_answer_again(
    transport: FakeTransport,
) -> None:
    svc = transport.add(SVC, numbered)
    gw = gateway(transport)
    first = post(gw, '"k-1"', b'{"qty": 1}')
    again = post(gw, '"k-1"', b'{"qty": 1}')
    assert first.status == again.status == 201
    assert again.body == first.body and again.header("Location") == "/orders/x"
    assert first.header("Idempotent-Replayed") is None
    assert again.header("Idempotent-Replayed") == "true"
    assert len(svc.received) == 1


def test_the_same_key_with_another_body_is_refused_with_422(transport: FakeTransport) -> None:
    svc = transport.add(SVC, numbered)
    gw = gateway(transport)
    assert post(gw, '"k-2"', b'{"qty": 1}').status == 201
    other = post(gw, '"k-2"', b'{"qty": 2}')
    assert other.status == 422
    assert other.json()["error"] == "idempotency_key_reused"
    assert len(svc.received) == 1


def test_requests_without_a_key_pass_unless_the_route_requires_one(
    transport: FakeTransport,
) -> None:
    svc = transport.add(SVC, numbered)
    optional = gateway(transport)
    assert post(optional, None, b"{}").status == 201
    assert post(optional, None, b"{}").status == 201
    assert len(svc.received) == 2
    required = gateway(transport, {"required": True})
    refused = post(required, None, b"{}")
    assert refused.status == 400 and refused.json()["error"] == "idempotency_key_missing"
    assert len(svc.received) == 2


@pytest.mark.parametrize("value", ['"unterminated', '"a", "b"', '""', '"' + "x" * 256 + '"', "a b"])
def test_a_malformed_key_is_refused_with_400(transport: FakeTransport, value: str) -> None:
    svc = transport.add(SVC, numbered)
    refused = post(gateway(transport), value, b"{}")
    assert refused.status == 400
    assert refused.json()["error"] == "idempotency_key_invalid"
    assert svc.received == []


def test_a_server_error_is_not_stored_so_the_retry_reaches_the_upstream(
    transport: FakeTransport,
) -> None:
    answers = iter([(503, [], b"busy"), (201, [], b"made")])
    svc = transport.add(SVC, lambda r: next(answers))
    gw = gateway(transport)
    assert post(gw, '"k-3"', b"{}").status == 503
    second = post(gw, '"k-3"', b"{}")
    third = post(gw, '"k-3"', b"{}")
    assert (second.status, second.body, third.body) == (201, b"made", b"made")
    assert third.header("Idempotent-Replayed") == "true"
    assert len(svc.received) == 2


def test_an_answer_over_max_body_bytes_is_passed_on_and_not_stored(
    transport: FakeTransport,
) -> None:
    svc = transport.add(SVC, lambda r: (200, [], b"x" * 2000))
    gw = gateway(transport, {"max_body_bytes": 1000})
    assert post(gw, '"k-4"', b"{}").body == b"x" * 2000
    assert post(gw, '"k-4"', b"{}").body == b"x" * 2000
    assert len(svc.received) == 2


def test_a_body_over_max_request_bytes_gets_413_and_never_reaches_the_upstream(
    transport: FakeTransport,
) -> None:
    svc = transport.add(SVC, numbered)
    refused = post(gateway(transport, {"max_request_bytes": 100}), '"k-5"', b"y" * 101)
    assert refused.status == 413 and refused.json()["error"] == "body_too_large"
    assert svc.received == []


def test_the_upstream_receives_the_buffered_body_whole(transport: FakeTransport) -> None:
    svc = transport.add(SVC, numbered)
    body = b'{"note": "' + b"z" * 100_000 + b'"}'  # past the 64 KiB request buffer
    assert post(gateway(transport), '"k-6"', body).status == 201
    assert svc.received[0].body == body


def test_two_clients_with_the_same_key_are_independent(transport: FakeTransport) -> None:
    svc = transport.add(SVC, numbered)
    gw = gateway(transport)
    one = post(gw, '"shared"', b"{}", peer="10.0.0.1")
    two = post(gw, '"shared"', b"{}", peer="10.0.0.2")
    other_body = post(gw, '"shared"', b'{"x": 1}', peer="10.0.0.3")
    assert one.body != two.body and other_body.status == 201
    assert two.header("Idempotent-Replayed") is None
    assert len(svc.received) == 3


def test_a_record_expires_after_its_ttl(transport: FakeTransport) -> None:
    svc = transport.add(SVC, numbered)
    gw = gateway(transport, {"ttl": 1})
    first = post(gw, '"k-7"', b"{}")
    assert post(gw, '"k-7"', b"{}").body == first.body
    time.sleep(1.2)
    later = post(gw, '"k-7"', b"{}")
    assert later.body != first.body and later.header("Idempotent-Replayed") is None
    assert len(svc.received) == 2


def test_concurrent_duplicates_wait_for_the_first_and_share_its_answer(
    transport: FakeTransport,
) -> None:
    def slow(received: Received) -> tuple[int, list[tuple[str, str]], bytes]:
        time.sleep(0.3)
        return numbered(received)

    svc = transport.add(SVC, slow)
    gw = gateway(transport)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: post(gw, '"k-8"', b"{}"), range(8)))
    assert {a.status for a in answers} == {201}
    assert len({a.body for a in answers}) == 1
    assert sum(a.header("Idempotent-Replayed") == "true" for a in answers) == 7
    assert len(svc.received) == 1


def test_a_duplicate_that_waits_past_lock_timeout_gets_409(transport: FakeTransport) -> None:
    release = threading.Event()

    def held(received: Received) -> tuple[int, list[tuple[str, str]], bytes]:
        release.wait(5)
        return numbered(received)

    svc = transport.add(SVC, held)
    gw = gateway(transport, idempotency_store={"lock_timeout": 0.2})
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(post, gw, '"k-9"', b"{}")
        time.sleep(0.2)
        waited = post(gw, '"k-9"', b"{}")
        release.set()
        assert first.result(5).status == 201
    assert waited.status == 409 and waited.json()["error"] == "idempotency_request_in_flight"
    assert len(svc.received) == 1


def test_get_on_a_keyed_route_is_not_keyed(transport: FakeTransport) -> None:
    svc = transport.add(SVC, numbered)
    gw = gateway(transport, {"required": True})
    assert gw.request("GET", "/orders").status == 201
    assert len(svc.received) == 1


def test_an_unreachable_redis_lets_keyed_requests_through_unguarded(
    transport: FakeTransport,
) -> None:
    svc = transport.add(SVC, numbered)
    store = {"backend": f"redis://127.0.0.1:{free_port()}/0", "redis_timeout": 0.2}
    gw = gateway(transport, idempotency_store=store)
    first, second = post(gw, '"k-10"', b"{}"), post(gw, '"k-10"', b"{}")
    assert first.status == second.status == 201
    assert first.body != second.body and second.header("Idempotent-Replayed") is None
    assert len(svc.received) == 2
