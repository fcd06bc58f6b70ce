"""``auth: shadow`` in process: the credential is checked and reported, the request is never
refused, and the upstream never learns an identity (neither the gateway's nor the client's)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from gw.auth import hash_api_key
from tests.pipeline.harness import InProcessGateway
from tests.support.fake_transport import FakeTransport

KEY = "alice-key-" + "a" * 24
SVC = "svc.test:8001"
IDENTITY = ("x-user-id", "x-user-role", "x-user-issuer")


@pytest.fixture
def transport() -> Iterator[FakeTransport]:
    fake = FakeTransport()
    yield fake
    fake.close()


def shadowed(transport: FakeTransport, **extra: object) -> InProcessGateway:
    route = {"name": "probe", "path": "/api/**", "upstream": "svc", "auth": "shadow"}
    config = {
        "upstreams": {"svc": {"targets": [f"http://{SVC}"]}},
        "routes": [route],
        "auth": {
            "type": "api_key",
            "api_keys": {
                "keys": [{"id": "k1", "sha256": hash_api_key(KEY), "consumer": "alice",
                          "role": "admin"}]
            },
        },
        **extra,
    }  # fmt: skip
    return InProcessGateway(config, transport)


@pytest.mark.parametrize(
    "credential",
    [{}, {"X-API-Key": "nope-" + "n" * 30}, {"X-API-Key": KEY}],
    ids=["none", "bad", "good"],
)
def test_every_caller_reaches_the_upstream_without_identity_headers(
    transport: FakeTransport, credential: dict[str, str]
) -> None:
    svc = transport.add(SVC)
    gw = shadowed(transport)
    spoofed = {"X-User-Id": "root", "X-User-Role": "admin", "x-user-issuer": "me"}
    answer = gw.request("GET", "/api/x", {**credential, **spoofed})
    assert answer.status == 200
    [received] = svc.received
    assert [name for name in IDENTITY if name in received.headers] == []
    assert received.headers.get("x-api-key") == credential.get("X-API-Key")


def test_a_would_be_rejection_is_logged_with_its_reason(
    transport: FakeTransport, caplog: pytest.LogCaptureFixture
) -> None:
    transport.add(SVC)
    gw = shadowed(transport)
    with caplog.at_level(logging.INFO, logger="gw.audit"):
        gw.request("GET", "/api/x", {"X-API-Key": "nope-" + "n" * 30})
        gw.request("GET", "/api/x", {"X-API-Key": KEY})
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gw.audit"]
    assert len(lines) == 1  # the good key is not logged, and no auth_failure line either
    assert lines[0]["event"] == "auth_shadow"
    assert lines[0]["decision"] == "would_reject"
    assert lines[0]["reason"] == "unknown_api_key"
    assert (lines[0]["status"], lines[0]["route"]) == (401, "probe")


def test_user_keyed_limits_see_an_anonymous_caller(transport: FakeTransport) -> None:
    svc = transport.add(SVC)
    limit = {"requests_per_minute": 1, "key": "user", "when_missing": "skip"}
    gw = shadowed(transport, rate_limiting={"default": limit})
    statuses = [gw.request("GET", "/api/x", {"X-API-Key": KEY}).status for _ in range(3)]
    assert statuses == [200, 200, 200]  # alice's bucket is never drawn from: no user
    assert len(svc.received) == 3


def test_the_failure_throttle_never_refuses_a_shadow_route(transport: FakeTransport) -> None:
    transport.add(SVC)
    gw = shadowed(transport)  # the default failure_limit is on
    bad = {"X-API-Key": "nope-" + "n" * 30}
    assert {gw.request("GET", "/api/x", bad).status for _ in range(40)} == {200}
