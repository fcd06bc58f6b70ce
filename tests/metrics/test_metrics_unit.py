"""The metrics adapter in one process: what a scrape shows after the pipeline's calls, who may
scrape, and the master's hooks (run in fresh interpreters, as a gunicorn master would)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

# Imported here, before any test touches PROMETHEUS_MULTIPROC_DIR, so that this process's
# prometheus_client stays in single-process mode whatever a test sets later.
import prometheus_client  # noqa: F401
import pytest
from pydantic import ValidationError

from gw.core.exchange import Exchange
from gw.observe import batches
from gw.observe.instruments import DURATION_BUCKETS, Metrics
from gw.observe.metrics import MetricsSettings, worker_exited
from tests.metrics.scrape import samples, total, value

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def metrics() -> Metrics:
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ, "run the unit tests in single mode"
    return Metrics()


def ended(route: str | None, method: str, status: int, seconds: float) -> Exchange:
    """A request that took ``seconds``, as the pipeline hands it on when its answer is done."""
    exchange = Exchange("req-1", method, "/x")
    exchange.route, exchange.status = route, status
    exchange.ended = exchange.started + seconds
    return exchange


def finish(metrics: Metrics, route: str | None, method: str, status: int, seconds: float) -> None:
    metrics.finished([ended(route, method, status, seconds)])


def scrape(metrics: Metrics, **request: str) -> dict[Any, float]:
    content_type, body = metrics.render(request)
    assert content_type.startswith("text/plain")
    return samples(body.decode())


def test_requests_are_counted_by_route_method_and_status_class(metrics: Metrics) -> None:
    for status in (200, 201, 200, 404, 503):
        finish(metrics, "orders", "GET", status, 0.004)
    finish(metrics, "orders", "POST", 201, 0.004)
    found = scrape(metrics)
    name = "gw_requests_total"
    assert value(found, name, route="orders", method="GET", status_class="2xx") == 3
    assert value(found, name, route="orders", method="GET", status_class="4xx") == 1
    assert value(found, name, route="orders", method="GET", status_class="5xx") == 1
    assert value(found, name, route="orders", method="POST", status_class="2xx") == 1
    assert total(found, name) == 6


def test_requests_handed_on_by_the_pipeline_are_in_the_next_scrape(metrics: Metrics) -> None:
    """The pipeline queues each finished request (``gw.observe.batches``); a scrape counts
    every one queued before it, without waiting for the batch."""
    for number in range(10):
        exchange = ended("orders", "GET", 200, 0.004)
        if number % 2:
            exchange.upstream, exchange.upstream_seconds = "orders-service", 0.02
        batches.add(exchange)
    found = scrape(metrics)
    assert value(found, "gw_requests_total", route="orders", method="GET", status_class="2xx") == 10
    proxy = {"upstream": "orders-service", "via": "proxy"}
    assert value(found, "gw_upstream_duration_seconds_count", **proxy) == 5
    assert value(found, "gw_upstream_duration_seconds_bucket", **proxy, le="0.01") == 0
    assert value(found, "gw_upstream_duration_seconds_bucket", **proxy, le="0.025") == 5


def test_client_chosen_methods_and_missing_routes_do_not_make_new_series(
    metrics: Metrics,
) -> None:
    for method in ("BREW", "get", "X" * 100):
        finish(metrics, None, method, 400, 0.001)
    found = scrape(metrics)
    series = [labels for (n, labels) in found if n == "gw_requests_total"]
    assert series == [
        frozenset({("route", "(none)"), ("method", "OTHER"), ("status_class", "4xx")})
    ]
    assert (
        value(found, "gw_requests_total", route="(none)", method="OTHER", status_class="4xx") == 3
    )


def test_durations_land_in_gateway_sized_buckets(metrics: Metrics) -> None:
    assert DURATION_BUCKETS[0] == 0.001 and DURATION_BUCKETS[-1] == 30.0
    finish(metrics, "orders", "GET", 200, 0.004)
    finish(metrics, "orders", "GET", 200, 12.0)
    found = scrape(metrics)
    bucket = "gw_request_duration_seconds_bucket"
    assert value(found, bucket, route="orders", le="0.0025") == 0
    assert value(found, bucket, route="orders", le="0.005") == 1
    assert value(found, bucket, route="orders", le="10.0") == 1
    assert value(found, bucket, route="orders", le="30.0") == 2
    assert value(found, "gw_request_duration_seconds_count", route="orders") == 2
    assert value(found, "gw_request_duration_seconds_sum", route="orders") == pytest.approx(12.004)


def test_upstream_timings_errors_and_retries(metrics: Metrics) -> None:
    up = "orders-service"
    metrics.upstream(up, 0.02)
    metrics.upstream_error(up, "upstream_timeout")
    metrics.upstream_error(up, "upstream_timeout")
    metrics.retry(up, "attempted")
    metrics.retry(up, "budget_exhausted")
    found = scrape(metrics)
    proxy = {"upstream": up, "via": "proxy"}
    assert value(found, "gw_upstream_duration_seconds_count", **proxy) == 1
    assert value(found, "gw_upstream_duration_seconds_bucket", **proxy, le="0.025") == 1
    assert value(found, "gw_upstream_errors_total", **proxy, kind="upstream_timeout") == 2
    assert value(found, "gw_upstream_retries_total", upstream=up, outcome="attempted") == 1
    assert value(found, "gw_upstream_retries_total", upstream=up, outcome="budget_exhausted") == 1
    with pytest.raises(ValueError):
        metrics.retry(up, "maybe")


def test_aggregate_parts_count_in_their_upstreams_series_apart_from_proxied_requests(
    metrics: Metrics,
) -> None:
    metrics.upstream("orders", 0.02)
    metrics.upstream("orders", 0.03, via="aggregate")
    metrics.upstream_error("orders", "upstream_timeout", via="aggregate")
    found = scrape(metrics)
    count = "gw_upstream_duration_seconds_count"
    assert value(found, count, upstream="orders", via="proxy") == 1
    assert value(found, count, upstream="orders", via="aggregate") == 1
    errors = "gw_upstream_errors_total"
    assert value(found, errors, upstream="orders", kind="upstream_timeout", via="aggregate") == 1
    with pytest.raises(ValueError):
        metrics.upstream("orders", 0.01, via="sideways")


def test_rate_limit_decisions_are_counted_per_policy(metrics: Metrics) -> None:
    for decision in ("allowed", "allowed", "rejected", "failed_open"):
        metrics.ratelimit("per-ip", decision)
    metrics.ratelimit("per-ip", "rejected", "shadow")
    found = scrape(metrics)
    name = "gw_ratelimit_decisions_total"
    assert value(found, name, policy="per-ip", decision="allowed", mode="enforce") == 2
    assert value(found, name, policy="per-ip", decision="rejected", mode="enforce") == 1
    assert value(found, name, policy="per-ip", decision="rejected", mode="shadow") == 1
    with pytest.raises(ValueError):
        metrics.ratelimit("per-ip", "denied")
    with pytest.raises(ValueError):
        metrics.ratelimit("per-ip", "allowed", "dry")


def test_shadow_auth_verdicts_are_counted_apart(metrics: Metrics) -> None:
    metrics.auth_shadow("api", "would_reject", "expired")
    metrics.auth_shadow("api", "would_allow", "")
    found = scrape(metrics)
    name = "gw_auth_shadow_decisions_total"
    assert value(found, name, route="api", decision="would_reject", reason="expired") == 1
    assert value(found, name, route="api", decision="would_allow", reason="") == 1
    with pytest.raises(ValueError):
        metrics.auth_shadow("api", "rejected", "expired")


def test_breaker_and_target_states_come_from_the_shared_health_table(metrics: Metrics) -> None:
    rows = [
        {"kind": "upstream", "upstream": "orders-service", "breaker": "open"},
        {
            "kind": "target",
            "upstream": "orders-service",
            "target": "http://10.0.0.1:8080",
            "state": "healthy",
        },
        {
            "kind": "target",
            "upstream": "orders-service",
            "target": "http://10.0.0.2:8080",
            "state": "ejected",
        },
    ]
    metrics.watch_health(lambda: rows)
    found = scrape(metrics)
    states = {
        s: value(found, "gw_circuit_breaker_state", upstream="orders-service", state=s)
        for s in ("closed", "open", "half_open")
    }
    assert states == {"closed": 0, "open": 1, "half_open": 0}
    healthy = "gw_upstream_target_healthy"
    assert value(found, healthy, upstream="orders-service", target="http://10.0.0.1:8080") == 1
    assert value(found, healthy, upstream="orders-service", target="http://10.0.0.2:8080") == 0
    rows[0]["breaker"] = "closed"
    found = scrape(metrics)
    assert value(found, "gw_circuit_breaker_state", upstream="orders-service", state="closed") == 1


def test_requests_in_flight_are_read_from_the_watched_count(metrics: Metrics) -> None:
    serving = [2]
    metrics.watch_inflight(lambda: serving[0])
    assert value(scrape(metrics), "gw_requests_in_flight") == 2
    serving[0] = 0
    assert value(scrape(metrics), "gw_requests_in_flight") == 0


def test_the_limiter_table_is_read_at_each_scrape_not_per_request(metrics: Metrics) -> None:
    reads: list[dict[str, int]] = []

    def stats() -> dict[str, int]:
        n = len(reads)  # 0 at the first scrape, 1 at the second
        reads.append({"slots": 65536, "used": 10 * n, "table_full": 3 * n})
        return reads[-1]

    metrics.watch_limiter_table(stats)
    metrics.watch_limiter_table(stats)  # watching twice must not double the series
    for _ in range(100):
        finish(metrics, "orders", "GET", 200, 0.001)
    assert reads == []
    scrape(metrics)
    found = scrape(metrics)
    assert len(reads) == 2
    assert value(found, "gw_ratelimit_table_slots") == 65536
    assert value(found, "gw_ratelimit_table_used_slots") == 10
    assert value(found, "gw_ratelimit_table_full_total") == 3


def test_a_table_that_cannot_be_read_does_not_break_the_scrape(metrics: Metrics) -> None:
    def broken() -> dict[str, int]:
        raise OSError("gone")

    metrics.watch_limiter_table(broken)
    finish(metrics, "orders", "GET", 200, 0.001)
    found = scrape(metrics)
    assert total(found, "gw_requests_total") == 1
    assert value(found, "gw_ratelimit_table_slots") is None


def test_openmetrics_is_answered_to_a_scraper_that_asks_for_it(metrics: Metrics) -> None:
    finish(metrics, "orders", "GET", 200, 0.001)
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    for request in ({"HTTP_ACCEPT": accept}, {"Accept": accept}):
        content_type, body = metrics.render(request)
        assert content_type.startswith("application/openmetrics-text")
        assert body.endswith(b"# EOF\n")
        assert b'gw_requests_total{method="GET",route="orders",status_class="2xx"} 1.0' in body
    content_type, body = metrics.render({"HTTP_ACCEPT": "*/*"})
    assert content_type.startswith("text/plain")
    assert b"# EOF" not in body


def test_a_process_whose_client_counts_alone_renders_its_own_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The directory named too late (after the import) must not hide this process's counts."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    metrics = Metrics()
    finish(metrics, "orders", "GET", 200, 0.001)
    assert metrics.directory is None
    assert total(scrape(metrics), "gw_requests_total") == 1
    assert list(tmp_path.iterdir()) == []


# -- who may scrape ---------------------------------------------------------------------------


def test_settings_default_to_local_scrapers_only() -> None:
    settings = MetricsSettings()
    assert (settings.enabled, settings.path) == (True, "/metrics")
    for peer in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        assert settings.allows(peer), peer
    for peer in ("127.0.0.2", "10.1.2.3", "2001:db8::1", "unix", "localhost", "not an ip"):
        assert not settings.allows(peer), peer
    # Behind the nginx drop-in every public request comes from the unix socket.
    assert not settings.allows("")


def test_allow_from_names_networks_and_the_unix_socket() -> None:
    settings = MetricsSettings.model_validate({"allow_from": ["10.0.0.0/8", "fd00::/8"]})
    assert settings.allows("10.200.3.4")
    assert settings.allows("fd00::5")
    assert not settings.allows("")  # a unix-socket peer is not listed here
    assert not settings.allows("127.0.0.1")
    assert MetricsSettings.model_validate({"allow_from": ["unix"]}).allows("")
    assert not MetricsSettings.model_validate({"allow_from": []}).allows("127.0.0.1")


@pytest.mark.parametrize(
    "block",
    [
        {"allow_from": ["10.0.0.0/33"]},
        {"allow_from": ["everyone"]},
        {"path": "metrics"},
        {"path": "/metrics?x"},
        {"enabled": True, "port": 9100},
    ],
)
def test_invalid_metrics_blocks_are_refused(block: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        MetricsSettings.model_validate(block)


def test_settings_are_frozen() -> None:
    settings = MetricsSettings()
    with pytest.raises(ValidationError):
        settings.path = "/other"  # type: ignore[misc]


# -- the master's hooks -----------------------------------------------------------------------


def test_a_dead_workers_live_gauges_go_and_its_counts_stay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [
        "counter_4242.db",
        "histogram_4242.db",
        "gauge_livesum_4242.db",
        "gauge_livemax_4242.db",
        "gauge_livemin_4242.db",
        "gauge_livesum_4243.db",
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    worker_exited(4242)
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".db"))
    # The dead worker's counts are folded into the archives (see test_metric_files.py).
    assert left == ["counter_archive.db", "gauge_livesum_4243.db", "histogram_archive.db"]


def test_worker_exited_without_a_metrics_directory_does_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    worker_exited(4242)


def _in_a_fresh_master(code: str, env: dict[str, str]) -> dict[str, Any]:
    """Run ``code`` in a new interpreter (a would-be gunicorn master); return its JSON."""
    base = {k: v for k, v in os.environ.items() if "multiproc_dir" not in k.lower()}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout.splitlines()[-1]))


PREPARE = """
    import json, os, sys
    import gw.observe.metrics
    import gw.config.load  # the master checks the config (it may import metrics' settings)
    directory = gw.observe.metrics.prepare_master()
    print(json.dumps({
        "directory": directory,
        "env": os.environ.get("PROMETHEUS_MULTIPROC_DIR"),
        "files": sorted(os.listdir(directory)),
        "client_imported": "prometheus_client" in sys.modules,
        "mode": oct(os.stat(directory).st_mode & 0o777),
    }))
"""


def test_the_master_makes_and_wipes_the_directory_and_owns_no_metric_files(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    for stale in ("counter_11.db", "histogram_11.db", "gauge_livesum_11.db", "gauge_all_12.db"):
        (directory / stale).write_bytes(b"stale")
    (directory / "notes.txt").write_text("not ours")
    (directory / "other.db").write_text("not ours either")
    got = _in_a_fresh_master(PREPARE, {"GW_RUNTIME_DIR": str(tmp_path)})
    assert got["directory"] == got["env"] == str(directory)
    assert got["files"] == ["notes.txt", "other.db"]
    assert got["client_imported"] is False


def test_the_master_creates_a_private_directory(tmp_path: Path) -> None:
    got = _in_a_fresh_master(PREPARE, {"GW_RUNTIME_DIR": str(tmp_path)})
    assert got["directory"] == str(tmp_path / "metrics")
    assert got["mode"] == "0o700"


def test_an_explicit_prometheus_multiproc_dir_wins(tmp_path: Path) -> None:
    chosen = tmp_path / "chosen"
    for env in (
        {"PROMETHEUS_MULTIPROC_DIR": str(chosen)},
        {"prometheus_multiproc_dir": str(chosen)},
    ):
        got = _in_a_fresh_master(PREPARE, {"GW_RUNTIME_DIR": str(tmp_path), **env})
        assert got["directory"] == got["env"] == str(chosen)


def test_the_master_refuses_a_client_imported_too_early(tmp_path: Path) -> None:
    code = """
        import json
        import prometheus_client
        import gw.observe.metrics
        try:
            gw.observe.metrics.prepare_master()
        except RuntimeError as ex:
            print(json.dumps({"error": str(ex)}))
        else:
            print(json.dumps({}))
    """
    got = _in_a_fresh_master(code, {"GW_RUNTIME_DIR": str(tmp_path)})
    assert "before prepare_master" in got["error"]


def test_without_a_runtime_directory_the_master_says_what_is_missing() -> None:
    code = """
        import json, os
        os.environ.pop("GW_RUNTIME_DIR", None)
        import gw.observe.metrics
        try:
            gw.observe.metrics.prepare_master()
        except RuntimeError as ex:
            print(json.dumps({"error": str(ex)}))
    """
    got = _in_a_fresh_master(code, {})
    assert "GW_RUNTIME_DIR" in got["error"]


def test_cache_answers_jwks_fetches_and_worker_starts_are_exported(metrics: Metrics) -> None:
    for result in ("miss", "hit", "hit", "bypass"):
        metrics.cache("catalog", result)
    metrics.jwks_fetch("https://idp.example/jwks.json", "failed")
    before = time.time()
    metrics.jwks_fetch("https://idp.example/jwks.json", "ok")
    found = scrape(metrics)
    assert value(found, "gw_cache_lookups_total", route="catalog", result="hit") == 2
    assert value(found, "gw_cache_lookups_total", route="catalog", result="bypass") == 1
    uri = "https://idp.example/jwks.json"
    assert value(found, "gw_jwks_fetches_total", uri=uri, outcome="failed") == 1
    assert value(found, "gw_jwks_fetches_total", uri=uri, outcome="ok") == 1
    stamp = value(found, "gw_jwks_last_success_timestamp_seconds", uri=uri)
    assert before <= stamp <= time.time()
    assert value(found, "gw_worker_starts_total") == 1
    assert value(found, "gw_workers") == 1
    with pytest.raises(ValueError):
        metrics.cache("catalog", "HIT from squid")  # only the stage's own words
