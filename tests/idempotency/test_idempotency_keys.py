"""The key header, the record's name and the config's checks (pure logic, no sockets)."""

from __future__ import annotations

import pytest

from gw.config.load import parse_config
from gw.errors import ConfigError, IdempotencyKeyInvalid
from gw.idempotency import keys

UPSTREAMS = {"svc": {"targets": ["http://127.0.0.1:9"]}}


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ('"8e03978e-40d5-43e8"', "8e03978e-40d5-43e8"),
        ('  "with space"  ', "with space"),
        ('"a\\"b\\\\c"', 'a"b\\c'),  # sf-string escapes
        ("bare-token_1", "bare-token_1"),  # unquoted, as most clients send it
    ],
)
def test_a_key_is_an_sf_string_or_a_bare_token(value: str, key: str) -> None:
    assert keys.parse_key(value) == key


@pytest.mark.parametrize(
    "value", ['"a"; p=1', '"a", "b"', '"\\x"', '"tab\there"', "", '""', "caf\u00e9", "a,b"]
)
def test_anything_else_is_refused(value: str) -> None:
    with pytest.raises(IdempotencyKeyInvalid):
        keys.parse_key(value)


def test_a_record_is_private_to_its_route_and_scope() -> None:
    name = keys.record_key("orders", '["ip","10.0.0.1"]', "k").digest
    assert name != keys.record_key("orders", '["ip","10.0.0.2"]', "k").digest
    assert name != keys.record_key("refunds", '["ip","10.0.0.1"]', "k").digest
    assert name == keys.record_key("orders", '["ip","10.0.0.1"]', "k").digest


def test_the_fingerprint_covers_method_target_and_body() -> None:
    base = keys.fingerprint("POST", "/orders", "", b"{}")
    assert base == keys.fingerprint("POST", "/orders", "", b"{}")
    for other in (
        keys.fingerprint("PATCH", "/orders", "", b"{}"),
        keys.fingerprint("POST", "/orders/1", "", b"{}"),
        keys.fingerprint("POST", "/orders", "a=1", b"{}"),
        keys.fingerprint("POST", "/orders", "", b"{ }"),
    ):
        assert other != base


@pytest.mark.parametrize(("status", "stored"), [(201, True), (404, True), (302, True),
                                                 (408, False), (409, False), (429, False),
                                                 (500, False), (503, False)])  # fmt: skip
def test_only_final_statuses_are_stored(status: int, stored: bool) -> None:
    assert keys.storable(status) is stored


def test_a_route_accepts_a_ttl_with_a_unit() -> None:
    route = {"path": "/o", "upstream": "svc", "idempotency": {"ttl": "24h", "methods": ["post"]}}
    config = parse_config({"upstreams": UPSTREAMS, "routes": [route]}, environ={})
    spec = config.table.ordered()[0].payload
    assert spec.idempotency is not None and spec.idempotency.ttl == 86400
    assert spec.idempotency.methods == ("POST",)
    assert config.idempotency_store is not None


@pytest.mark.parametrize(
    ("idempotency", "where"),
    [
        ({"methods": ["GET"]}, "routes[0].idempotency.methods"),
        ({"ttl": "forever"}, "routes[0].idempotency.ttl"),
        ({"ttl": "8d"}, "routes[0].idempotency.ttl"),
        ({"max_request_bytes": 0}, "routes[0].idempotency.max_request_bytes"),
    ],
)
def test_a_bad_route_setting_is_refused_at_its_location(
    idempotency: dict[str, object], where: str
) -> None:
    route = {"path": "/o", "upstream": "svc", "idempotency": idempotency}
    with pytest.raises(ConfigError) as info:
        parse_config({"upstreams": UPSTREAMS, "routes": [route]}, environ={})
    assert where in str(info.value)


def test_an_aggregate_route_cannot_be_keyed() -> None:
    route = {
        "path": "/home",
        "aggregate": {"parts": [{"key": "a", "upstream": "svc", "path": "/a"}]},
        "idempotency": {},
    }
    with pytest.raises(ConfigError) as info:
        parse_config({"upstreams": UPSTREAMS, "routes": [route]}, environ={})
    assert "routes[0].idempotency: an aggregate route cannot be keyed" in str(info.value)


def test_no_store_is_opened_when_no_route_is_keyed() -> None:
    route = {"path": "/o", "upstream": "svc"}
    config = parse_config({"upstreams": UPSTREAMS, "routes": [route]}, environ={})
    assert config.idempotency_store is None


def test_a_redis_mark_shorter_than_the_deadline_is_warned_about() -> None:
    route = {"path": "/o", "upstream": "svc", "idempotency": {}}
    data = {
        "upstreams": UPSTREAMS,
        "routes": [route],
        "idempotency_store": {"backend": "redis://127.0.0.1:9/0", "lock_timeout": 5},
    }
    config = parse_config(data, environ={})
    assert any(w.startswith("idempotency_store.lock_timeout") for w in config.warnings)
