"""A metrics-only listen address (seed 002's PROMETHEUS_PORT): ``GW_METRICS_BIND`` serves the
metrics path, health and ready, and nothing else; the metrics path leaves the public listener."""

from __future__ import annotations

import requests

from tests.support.gateway import free_port, start_gateway
from tests.support.upstream import start_upstream


def test_metrics_are_served_on_their_own_listener_only() -> None:
    upstream = start_upstream()
    port = free_port()
    config = {
        "upstreams": {"svc": {"targets": [upstream.url]}},
        "routes": [{"path": "/api/**", "upstream": "svc"}],
    }
    gw = start_gateway(config, workers=1, extra_env={"GW_METRICS_BIND": f"127.0.0.1:{port}"})
    metrics = f"http://127.0.0.1:{port}"
    try:
        assert requests.get(gw.url + "/api/x", timeout=5).status_code == 200
        scrape = requests.get(metrics + "/metrics", timeout=5)
        assert scrape.status_code == 200
        assert "gw_requests_total" in scrape.text
        public = requests.get(gw.url + "/metrics", timeout=5)
        assert public.status_code == 404 and "gw_requests_total" not in public.text
        assert requests.get(metrics + "/health", timeout=5).status_code == 200
        other = requests.get(metrics + "/api/x", timeout=5)
        assert other.status_code == 404
        assert upstream.count() == 1
    finally:
        gw.stop()
        upstream.close()
