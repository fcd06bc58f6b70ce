"""Authentication's metrics in one process: introspection calls, cache hits, key fetches."""

from __future__ import annotations

import os
from collections.abc import Callable

import prometheus_client  # noqa: F401  (single-process mode, as in test_metrics_unit)
import pytest

from gw.observe.instruments import Metrics
from tests.metrics.scrape import samples, value


@pytest.fixture
def metrics() -> Metrics:
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ, "run the unit tests in single mode"
    return Metrics()


def test_introspection_calls_hits_and_key_fetches_are_counted(metrics: Metrics) -> None:
    metrics.introspection("idp", "active", 0.004)
    metrics.introspection("idp", "unavailable", 2.0)
    metrics.introspection_cache_hit("idp", "active")
    metrics.introspection_cache_hit("idp", "active")
    metrics.jwks_fetch("https://idp.example/.well-known/openid-configuration", "failed")
    found = samples(metrics.render({})[1].decode())
    assert value(found, "gw_introspection_requests_total", issuer="idp", outcome="active") == 1
    assert value(found, "gw_introspection_requests_total", issuer="idp", outcome="unavailable") == 1
    assert value(found, "gw_introspection_seconds_count", issuer="idp") == 2
    assert value(found, "gw_introspection_seconds_bucket", issuer="idp", le="0.005") == 1
    assert value(found, "gw_introspection_cache_hits_total", issuer="idp", answer="active") == 2
    uri = "https://idp.example/.well-known/openid-configuration"
    assert value(found, "gw_jwks_fetches_total", uri=uri, outcome="failed") == 1


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.introspection("idp", "maybe", 0.1),
        lambda m: m.introspection_cache_hit("idp", "unavailable"),
        lambda m: m.jwks_fetch("https://idp.example/jwks", "partial"),
    ],
)
def test_only_known_outcomes_make_series(metrics: Metrics, call: Callable[[Metrics], None]) -> None:
    with pytest.raises(ValueError):
        call(metrics)
