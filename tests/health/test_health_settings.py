"""The configuration of targets, balancing and health: defaults, what is refused and where,
and what it compiles into."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from gw.health.choice import PassivePolicy
from gw.health.settings import UpstreamHealthSettings, parse_statuses


def load(**fields: Any) -> UpstreamHealthSettings:
    return UpstreamHealthSettings.model_validate({"targets": ["http://a:1"], **fields})


def problem(**fields: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        load(**fields)
    (error,) = caught.value.errors()
    return ".".join(str(p) for p in error["loc"]) + ": " + error["msg"]


def test_defaults_round_robin_passive_ejection_on_and_no_breaker() -> None:
    settings = load()
    assert settings.balance == "round_robin"
    assert settings.active is None and settings.breaker is None
    assert settings.passive.policy() == PassivePolicy()
    balancer = settings.balancer("orders", ["http://a:1"], probe_timeout=22)
    assert balancer.breaker is None and balancer.passive.probe_timeout == 22


def test_targets_may_carry_weights() -> None:
    settings = load(targets=["http://a:1", {"url": "http://b:2", "weight": 19}], balance="weighted")
    assert settings.weighted_targets() == [("http://a:1", 1), ("http://b:2", 19)]
    assert settings.balancer("o", ["http://a:1", "http://b:2"], 5).weights == (1, 19)


def test_hash_keys_are_named_and_required_with_hash_balancing() -> None:
    assert load(balance="hash", hash_key="header:X-Tenant").hash_source() == ("header", "X-Tenant")
    assert load(balance="hash", hash_key="client_ip").hash_source() == ("client_ip", "")
    assert "hash_key is required" in problem(balance="hash")
    assert "only there" in problem(hash_key="user")
    assert load(balance="hash", hash_key="cookie:sid").hash_source() == ("cookie", "sid")
    assert problem(balance="hash", hash_key="cookie:").startswith("hash_key:")
    assert problem(balance="hash", hash_key="session:sid").startswith("hash_key:")
    assert problem(balance="hash", hash_key="header:Bad Name").startswith("hash_key:")


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"balance": "random"}, "balance"),
        ({"targets": []}, "targets"),
        ({"targets": [{"url": "http://a:1", "weight": 0}]}, ""),
        ({"targets": [{"url": "http://a:1", "weight": -1}]}, "targets.0.weight"),
        ({"passive": {"cooldown": 0}}, "passive.cooldown"),
        ({"passive": {"cooldown": 60, "max_cooldown": 30}}, "passive"),
        ({"passive": {"failure_statuses": [404]}}, "passive.failure_statuses.0"),
        ({"passive": {"consecutive": 5}}, "passive.consecutive"),
        ({"active": {"interval": 5}}, "active.path"),
        ({"active": {"path": "/health check"}}, "active.path"),
        ({"active": {"path": "/h", "expect_status": "2xx"}}, "active.expect_status"),
        ({"active": {"path": "/h", "timeout": 10, "interval": 5}}, "active"),
        ({"breaker": {"failure_ratio": 1.5}}, "breaker.failure_ratio"),
        ({"breaker": {"half_open_requests": 0}}, "breaker.half_open_requests"),
    ],
)
def test_invalid_settings_name_their_location(fields: dict[str, Any], where: str) -> None:
    assert problem(**fields).startswith(f"{where}:" if where else ": ")


def test_active_settings_compile_into_one_check_per_target() -> None:
    settings = load(active={"path": "/healthz?deep=1", "interval": 3, "expect_status": "200,204"})
    assert settings.active is not None
    (check,) = settings.active.specs("orders", ["http://a:1"])
    assert (check.upstream, check.url, check.path, check.interval) == (
        "orders",
        "http://a:1",
        "/healthz?deep=1",
        3,
    )
    assert check.accepts(204) and not check.accepts(201)


def test_breaker_settings_compile_into_a_policy() -> None:
    settings = load(breaker={"window": 30, "min_requests": 50, "failure_ratio": 0.25})
    balancer = settings.balancer("orders", ["http://a:1"], 5)
    assert balancer.breaker is not None
    assert (balancer.breaker.policy.window, balancer.breaker.policy.min_requests) == (30, 50)


def test_status_lists_parse_into_ranges() -> None:
    assert parse_statuses("200-399") == ((200, 399),)
    assert parse_statuses("200, 204,300-302") == ((200, 200), (204, 204), (300, 302))
    with pytest.raises(ValueError):
        parse_statuses("399-200")


def test_the_schema_documents_every_field() -> None:
    schema = UpstreamHealthSettings.model_json_schema()
    kinds = schema["properties"]["targets"]["items"]["anyOf"]
    assert [k["type"] for k in kinds] == ["string", "object"]
    assert set(schema["properties"]) == {
        "targets",
        "balance",
        "hash_key",
        "passive",
        "active",
        "breaker",
    }
