"""The operators' kit in deploy/: the Grafana dashboard and the Prometheus alert rules.

A real Prometheus (the Debian package's binary, its own config, port and storage) scrapes a
real gw under gunicorn every second, with real upstreams, a JWKS server, rate-limited and
cached routes under a bounded load. Every query of the dashboard must return series, every
alert expression must evaluate, and killing an upstream's only target must fire the alerts
that name it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.metrics.scrape import samples, total
from tests.support.gateway import ROOT, GatewayProcess, free_port, start_gateway
from tests.support.idp_server import CLIENT_ID, CLIENT_SECRET, start_idp_server
from tests.support.jwks_server import start_jwks_server
from tests.support.tokens import AUDIENCE, ISSUER, claims, jwks, rsa_key
from tests.support.upstream import Upstream, start_upstream, wait_for

pytestmark = pytest.mark.integration

OPAQUE = "opaque-token-of-the-kit-test"

DASHBOARD = ROOT / "deploy" / "grafana" / "gw-dashboard.json"
RULES = ROOT / "deploy" / "prometheus" / "gw-alerts.yml"
# Metrics the dashboard shows but gw does not export yet (none today): the test notices a name
# here that no query needs any more.
NOT_YET_EXPORTED: set[str] = set()
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}
QUERY_DEADLINE = 25.0  # seconds for every dashboard query to have series (1 s scrapes)
FIRING_DEADLINE = 30.0
# The upstream that dies: its own process, so that killing it ends every connection at once.
VICTIM = """
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def _binary(name: str) -> str:
    found = shutil.which(name) or (f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}") else "")
    if found:
        return found
    message = (
        f"{name} is not installed (Debian package prometheus; scripts/test-all.sh installs it)"
    )
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def dashboard_exprs() -> list[str]:
    """Every ``expr`` of the dashboard, Grafana's variables replaced (``$route`` by ``.*``)."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "expr" and isinstance(value, str):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads(DASHBOARD.read_text()))
    return [_substitute(expr) for expr in found]


def _substitute(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return re.sub(r"\$\{?[A-Za-z_]\w*\}?", ".*", expr)


def rule_exprs() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def test_the_alert_rules_pass_promtool() -> None:
    promtool = _binary("promtool")
    done = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rule_exprs())} rules found" in done.stdout


def _s(name: str, **labels: str) -> str:
    """A series of gateway ``a`` of job ``gw``, in promtool's notation."""
    pairs = {"job": "gw", "instance": "a", **labels}
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in pairs.items()) + "}"


# Each alert against synthetic series (promtool test rules; 1m steps, time() starts at 0):
# (alert, input series, eval time, labels of the alerts expected to fire then).
RULE_CASES: list[tuple[str, dict[str, str], str, list[dict[str, str]]]] = [
    ("GwDown", {_s("up"): "1 1 0 0 0 0"}, "2m", []),  # pending
    ("GwDown", {_s("up"): "1 1 0 0 0 0"}, "4m", [{"instance": "a"}]),
    (
        "GwHigh5xxRatio",
        {
            _s("gw_requests_total", route="r", status_class="2xx"): "0+60x12",
            _s("gw_requests_total", route="r", status_class="5xx"): "0+10x12",
            _s("gw_requests_total", route="ok", status_class="2xx"): "0+99x12",
            _s("gw_requests_total", route="ok", status_class="5xx"): "0+1x12",
        },
        "10m",
        [{"instance": "a", "route": "r"}],
    ),
    (
        "GwCircuitBreakerOpen",
        {
            _s("gw_circuit_breaker_state", upstream="u", state="open"): "0 0 1 1 1",
            _s("gw_circuit_breaker_state", upstream="v", state="open"): "0 0 0 0 0",
        },
        "4m",
        [{"instance": "a", "upstream": "u"}],
    ),
    (
        "GwUpstreamAllTargetsDown",
        {
            _s("gw_upstream_target_healthy", upstream="u", target="t1"): "1 0 0 0",
            _s("gw_upstream_target_healthy", upstream="u", target="t2"): "1 1 0 0",
            _s("gw_upstream_target_healthy", upstream="v", target="t1"): "1 0 0 0",
            _s("gw_upstream_target_healthy", upstream="v", target="t2"): "1 1 1 1",
        },
        "3m",
        [{"instance": "a", "upstream": "u"}],
    ),
    (
        "GwRateLimiterUnavailable",
        {
            _s("gw_ratelimit_decisions_total", policy="p", decision="allowed"): "0+100x8",
            _s("gw_ratelimit_decisions_total", policy="p", decision="failed_open"): "0 0 0+5x6",
        },
        "6m",
        [{"instance": "a", "policy": "p"}],
    ),
    (
        "GwJwksStale",
        {
            # old: failing, last success at time 0; fresh: failing, succeeded a minute ago;
            # quiet: no fetch failing, last success long ago (an idle gateway); never: failing,
            # never succeeded.
            _s("gw_jwks_fetches_total", uri="old", outcome="failed"): "0+1x80",
            _s("gw_jwks_last_success_timestamp_seconds", uri="old"): "0x80",
            _s("gw_jwks_fetches_total", uri="fresh", outcome="failed"): "0+1x80",
            _s("gw_jwks_last_success_timestamp_seconds", uri="fresh"): "0+60x80",
            _s("gw_jwks_fetches_total", uri="quiet", outcome="ok"): "1x80",
            _s("gw_jwks_last_success_timestamp_seconds", uri="quiet"): "0x80",
            _s("gw_jwks_fetches_total", uri="never", outcome="failed"): "0+1x80",
        },
        "75m",
        [{"instance": "a", "uri": "old"}, {"instance": "a", "uri": "never"}],
    ),
    (
        "GwWorkersRestarting",
        {
            _s("gw_workers"): "2x10",
            _s("gw_worker_starts_total"): "2 2 3 4 5 6 7 8 8 8",
        },
        "8m",
        [{"instance": "a"}],
    ),
    (
        "GwWorkersRestarting",  # one reload (every worker replaced once) is not restarting
        {
            _s("gw_workers"): "2x10",
            _s("gw_worker_starts_total"): "2 2 4 4 4 4 4 4 4 4",
        },
        "8m",
        [],
    ),
]


def test_every_alert_fires_on_the_series_it_is_about_and_only_those(tmp_path: Path) -> None:
    promtool = _binary("promtool")
    rules = yaml.safe_load(RULES.read_text())
    severity = {}
    for group in rules["groups"]:
        for rule in group["rules"]:
            severity[rule["alert"]] = rule["labels"]["severity"]
            rule.pop("annotations")  # promtool would compare their rendered text too
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    assert {case[0] for case in RULE_CASES} == set(severity)  # every alert has a case
    tests = [
        {
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in series.items()],
            "alert_rule_test": [
                {
                    "eval_time": at,
                    "alertname": alert,
                    "exp_alerts": [
                        {"exp_labels": {"job": "gw", "severity": severity[alert], **labels}}
                        for labels in firing
                    ],
                }
            ],
        }
        for alert, series, at, firing in RULE_CASES
    ]
    spec = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
    done = subprocess.run(
        [promtool, "test", "rules", "tests.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_dashboard_is_importable_with_a_datasource_input() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert [i["name"] for i in board["__inputs"]] == ["DS_PROMETHEUS"]
    text = DASHBOARD.read_text()
    uids = re.findall(r'"uid": "([^"]*)"', text)
    assert set(uids) == {"${DS_PROMETHEUS}", board["uid"]}  # no datasource of some install
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    names = {var["name"] for var in board["templating"]["list"]}
    assert names == {"job", "instance", "route", "upstream"}
    assert all(var["allValue"] == ".*" for var in board["templating"]["list"])


# -- a real Prometheus against a real gateway ---------------------------------------------


class Prometheus:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def query(self, expr: str) -> dict[str, Any]:
        answer = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5)
        body: dict[str, Any] = answer.json()
        return body

    def value(self, expr: str) -> float:
        """The value of a query that has one series."""
        [series] = self.query(expr)["data"]["result"]
        return float(series["value"][1])

    def firing(self) -> list[dict[str, str]]:
        alerts = requests.get(f"{self.url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
        return [a["labels"] for a in alerts if a["state"] == "firing"]


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="gw-kit-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def start_prometheus(workdir: Path, targets: list[str]) -> Prometheus:
    binary = _binary("prometheus")
    # The rules as shipped, their for: shortened so that a test can see them fire.
    rules = re.sub(r"(?m)^(\s+for:) \S+$", r"\1 1s", RULES.read_text())
    (workdir / "rules.yml").write_text(rules)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(workdir / "rules.yml")],
        "scrape_configs": [{"job_name": "gw", "static_configs": [{"targets": targets}]}],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = workdir / "prometheus.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.console.templates=/nonexistent",  # keep the package's paths out of it
                "--web.console.libraries=/nonexistent",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    prometheus = Prometheus(proc, port, log)

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"prometheus exited:\n{log.read_text()}")
        with contextlib.suppress(requests.RequestException):
            return requests.get(f"{prometheus.url}/-/ready", timeout=1).status_code == 200
        return False

    if not wait_for(ready, timeout=20.0, interval=0.2):
        stop(proc)
        raise RuntimeError(f"prometheus not ready in 20 s:\n{log.read_text()}")
    return prometheus


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def scraped(gw: GatewayProcess, name: str) -> float:
    """The sum of ``name``'s samples in a scrape of ``gw`` now."""
    return total(samples(requests.get(f"{gw.url}/metrics", timeout=5).text), name)


def test_every_dashboard_query_has_series_and_a_dead_upstream_fires_its_alerts(
    workdir: Path,
) -> None:
    _binary("prometheus")
    with contextlib.ExitStack() as stack:
        svc = start_upstream()
        stack.callback(svc.close)
        victim = start_victim()
        stack.callback(stop, victim.proc)
        key = rsa_key("rsa-kit")
        idp = start_jwks_server(jwks(key))
        stack.callback(idp.close)
        provider = start_idp_server()  # introspects opaque tokens
        stack.callback(provider.close)
        provider.activate(OPAQUE, sub="svc-account", exp=int(time.time()) + 3600)
        gw = start_gateway(
            _config(svc, victim, idp.url, provider.introspect_url),
            workers=2,
            extra_env={"GW_INTROSPECTION_SECRET": CLIENT_SECRET},
        )
        stack.callback(gw.stop)
        # A worker counts its start once it is up (a worker killed while it still loads gw
        # never started): kill one once a scrape shows both up.
        assert wait_for(lambda: scraped(gw, "gw_worker_starts_total") == 2, timeout=15)
        os.kill(gw.worker_pids()[0], signal.SIGKILL)  # a worker dies and is replaced
        assert wait_for(lambda: len(gw.worker_pids()) == 2, timeout=15)
        dead = f"127.0.0.1:{free_port()}"  # a gateway that does not answer: GwDown
        prometheus = start_prometheus(workdir, [f"127.0.0.1:{gw.port}", dead])
        stack.callback(stop, prometheus.proc)
        _load(gw, victim, f"Bearer {key.mint(claims())}")

        missing = _queries_without_series(prometheus)
        assert not missing, "dashboard queries without series:\n" + "\n".join(missing)
        this = f'instance="127.0.0.1:{gw.port}"'
        assert prometheus.value(f"sum(gw_workers{{{this}}})") == 2  # the dead one is dropped
        assert prometheus.value(f"sum(gw_worker_starts_total{{{this}}})") == 3
        for alert, expr in rule_exprs().items():
            answer = prometheus.query(expr)
            assert answer["status"] == "success", (alert, answer)

        expected = {
            ("GwUpstreamAllTargetsDown", "upstream", "victim"),
            ("GwHigh5xxRatio", "route", "victim"),
            ("GwCircuitBreakerOpen", "upstream", "flaky"),
            ("GwDown", "instance", dead),
        }

        def fired() -> set[tuple[str, str, str]]:
            # Failures go on (a counter's first sample is no rate): one request per poll.
            assert requests.get(f"{gw.url}/victim/again", timeout=10).status_code == 503
            labels = prometheus.firing()
            return {
                (name, label, value)
                for name, label, value in expected
                if any(a["alertname"] == name and a.get(label) == value for a in labels)
            }

        assert wait_for(lambda: fired() == expected, timeout=FIRING_DEADLINE, interval=0.5), (
            f"firing: {prometheus.firing()}"
        )
        alive = {a["alertname"] for a in prometheus.firing() if a.get("upstream") == "svc"}
        assert not alive, f"alerts about the healthy upstream: {alive}"


def _queries_without_series(prometheus: Prometheus) -> list[str]:
    """Poll each dashboard query until it has series (bounded); return those that never did."""
    deadline = time.monotonic() + QUERY_DEADLINE
    exprs = dashboard_exprs()
    for name in NOT_YET_EXPORTED:  # an entry no query needs any more is noticed
        assert any(name in e for e in exprs), f"NOT_YET_EXPORTED names {name}: no query does"
    pending = [e for e in exprs if not any(n in e for n in NOT_YET_EXPORTED)]
    while pending and time.monotonic() < deadline:
        answered = []
        for expr in pending:
            answer = prometheus.query(expr)
            assert answer["status"] == "success", (expr, answer)
            if answer["data"]["result"]:
                answered.append(expr)
        pending = [e for e in pending if e not in answered]
        if pending:
            time.sleep(1.0)
    return pending


class Victim:
    def __init__(self, proc: subprocess.Popen[bytes], port: int) -> None:
        self.proc, self.url = proc, f"http://127.0.0.1:{port}"


def start_victim() -> Victim:
    port = free_port()
    victim = Victim(subprocess.Popen([sys.executable, "-c", VICTIM, str(port)]), port)

    def answers() -> bool:
        with contextlib.suppress(requests.RequestException):
            return requests.get(victim.url, timeout=1).status_code == 200
        return False

    if not wait_for(answers, timeout=10):
        stop(victim.proc)
        raise RuntimeError("the victim upstream did not start")
    return victim


def _load(gw: GatewayProcess, victim: Victim, bearer: str) -> None:
    """About 200 requests of every kind the dashboard shows, flaky's breaker opened; then the
    victim's only target dies and its requests fail."""
    with requests.Session() as client:

        def get(path: str, **headers: str) -> int:
            return client.get(f"{gw.url}{path}", headers=headers, timeout=10).status_code

        assert {get(f"/api/items/{i}") for i in range(100)} == {200}
        limited = [get("/limited/x") for _ in range(20)]
        assert limited.count(200) == 5 and limited.count(429) == 15
        cached = [client.get(f"{gw.url}/cached/one", timeout=10) for _ in range(20)]
        assert [r.headers.get("X-Cache") for r in cached].count("HIT") >= 18
        assert {get(f"/secure/{i}", Authorization=bearer) for i in range(20)} == {200}
        assert get("/secure/x") == 401
        assert {get(f"/opaque/{i}", Authorization=f"Bearer {OPAQUE}") for i in range(5)} == {200}
        assert {get("/trial/x") for _ in range(5)} == {200}  # a shadow limit never refuses
        # Every answer a 503: the breaker opens (ejection is out of reach, see _config).
        assert {get("/flaky/__status/503") for _ in range(8)} == {503}
        assert {get(f"/victim/{i}") for i in range(10)} == {200}
        victim.proc.kill()  # the only target of upstream victim dies
        victim.proc.wait(timeout=5)
        failed = [get(f"/victim/{i}") for i in range(20)]
        assert set(failed) <= {502, 503} and failed[-1] == 503, failed


def _config(svc: Upstream, victim: Victim, jwks_uri: str, introspect_url: str) -> dict[str, Any]:
    return {
        "upstreams": {
            "svc": {"targets": [svc.url]},
            "flaky": {
                "targets": [svc.url],
                "passive": {"consecutive_failures": 1000},
                "breaker": {"window": 10, "min_requests": 4, "failure_ratio": 0.5},
            },
            "victim": {
                "targets": [victim.url],
                "passive": {"consecutive_failures": 2, "cooldown": 60},
                "active": {
                    "path": "/healthz",
                    "interval": 1,
                    "timeout": 1,
                    "healthy_threshold": 1,
                    "unhealthy_threshold": 1,
                },
                "breaker": {
                    "window": 10,
                    "min_requests": 4,
                    "failure_ratio": 0.5,
                    "open_seconds": 60,
                },
            },
        },
        "routes": [
            {"name": "api", "path": "/api/**", "upstream": "svc", "auth": "none"},
            {"name": "limited", "path": "/limited/**", "upstream": "svc", "auth": "none"},
            {
                "name": "cached",
                "path": "/cached/**",
                "upstream": "svc",
                "auth": "none",
                "cache": {"ttl": 60},
            },
            {"name": "secure", "path": "/secure/**", "upstream": "svc"},
            {"name": "opaque", "path": "/opaque/**", "upstream": "svc"},
            {"name": "trial", "path": "/trial/**", "upstream": "svc", "auth": "none"},
            {"name": "flaky", "path": "/flaky/**", "upstream": "flaky", "auth": "none"},
            {"name": "victim", "path": "/victim/**", "upstream": "victim", "auth": "none"},
        ],
        "auth": {
            "type": "jwt",
            "issuers": [
                {"name": "main", "jwks_uri": jwks_uri, "issuer": ISSUER, "audiences": [AUDIENCE]},
                {
                    "name": "idp",
                    "issuer": "https://idp.kit.test",
                    "introspection": {
                        "endpoint": introspect_url,
                        "client_id": CLIENT_ID,
                        "client_secret_env": "GW_INTROSPECTION_SECRET",
                    },
                },
            ],
        },
        "rate_limiting": {
            "default": {"requests_per_second": 1000, "key": "route"},
            "overrides": [
                {"path": "/limited/**", "requests_per_minute": 5, "key": "route"},
                {
                    "path": "/trial/**",
                    "limits": [{"name": "trial", "requests_per_minute": 1, "mode": "shadow"}],
                },
            ],
        },
    }
