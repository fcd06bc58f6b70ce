"""https upstreams with a private CA and client certificates (mutual TLS), through real gunicorn.

The upstreams are real TLS servers on 127.0.0.1 that REQUIRE a client certificate signed by a
CA made in the test; what the gateway trusts, shows and checks comes from each upstream's
``tls:`` block alone (no ``SSL_CERT_FILE``). Active health checks use the same settings.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gw.health.layout import TABLE_FILE
from gw.health.snapshot import snapshot
from tests.support.evil_upstream import EvilUpstream, start_evil_upstream
from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.rawhttp import get
from tests.support.tls import Pki, make_pki, mtls_server_context
from tests.support.upstream import wait_for

WORKERS = [None, "gw.edge.worker.BalancedThreadWorker"]  # gevent (the default) and gthread


@dataclass(frozen=True)
class Servers:
    pki: Pki
    other_ca: Path  # a CA that signed none of the servers' certificates
    by_ip: EvilUpstream  # certificate for 127.0.0.1
    by_name: EvilUpstream  # certificate for orders.internal only


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    other = make_pki(tmp_path_factory.mktemp("other-pki"))
    by_ip = start_evil_upstream(
        {}, tls=mtls_server_context(pki.server_ip, pki.server_ip_key, pki.ca)
    )
    by_name = start_evil_upstream(
        {}, tls=mtls_server_context(pki.server_dns, pki.server_dns_key, pki.ca)
    )
    yield Servers(pki, other.ca, by_ip, by_name)
    by_ip.close()
    by_name.close()


def _config(s: Servers) -> dict[str, Any]:
    pki = s.pki
    mutual = {
        "ca_file": str(pki.ca),
        "client_cert": str(pki.client),
        "client_key": str(pki.client_key),
    }
    checks = {"path": "/ok/check", "interval": 0.3, "timeout": 0.3, "unhealthy_threshold": 2}
    upstreams = {
        "mutual": {"targets": [s.by_ip.url], "tls": mutual, "active": checks},
        "no_client_cert": {"targets": [s.by_ip.url], "tls": {"ca_file": str(pki.ca)}},
        "checked_no_client_cert": {
            "targets": [s.by_ip.url],
            "tls": {"ca_file": str(pki.ca)},
            "active": checks,
        },
        "wrong_ca": {"targets": [s.by_ip.url], "tls": {**mutual, "ca_file": str(s.other_ca)}},
        "named": {
            "targets": [s.by_name.url],
            "tls": {**mutual, "server_name": "orders.internal"},
        },
        "unnamed": {"targets": [s.by_name.url], "tls": mutual},
        "unverified": {
            "targets": [s.by_ip.url],
            "tls": {
                "verify": False,
                "client_cert": mutual["client_cert"],
                "client_key": mutual["client_key"],
            },
        },
    }
    routes = [
        {"path": f"/{name}/**", "upstream": name, "strip_prefix": f"/{name}"} for name in upstreams
    ]
    for up in upstreams.values():
        up["retries"] = {"attempts": 1}
    return {"upstreams": upstreams, "routes": routes}


@pytest.fixture(scope="module", params=WORKERS, ids=["gevent", "gthread"])
def gw(request: Any, servers: Servers) -> Iterator[GatewayProcess]:
    process = start_gateway(_config(servers), workers=1, worker_class=request.param)
    yield process
    process.stop()


def test_mutual_tls_with_the_private_ca_answers_and_shows_the_client_certificate(
    gw: GatewayProcess, servers: Servers
) -> None:
    for i in range(3):
        answer = get(gw.port, f"/mutual/ok/mutual-{gw.port}-{i}")
        assert (answer.status, answer.body) == (200, f"mutual-{gw.port}-{i}".encode())
    [seen] = servers.by_ip.requests_for(f"/ok/mutual-{gw.port}-0")
    assert seen.client == "gw-client"


def test_without_the_client_certificate_the_handshake_fails_with_502(gw: GatewayProcess) -> None:
    answer = get(gw.port, "/no_client_cert/ok/never")
    assert answer.status == 502
    assert answer.json()["error"] == "upstream_unavailable"
    assert "TLS handshake failed" in answer.json()["message"]


def test_a_server_certificate_from_another_ca_is_refused_with_502(
    gw: GatewayProcess, servers: Servers
) -> None:
    answer = get(gw.port, f"/wrong_ca/ok/wrong-ca-{gw.port}")
    assert answer.status == 502
    assert answer.json()["error"] == "upstream_unavailable"
    assert "TLS handshake failed" in answer.json()["message"]
    assert servers.by_ip.requests_for(f"/ok/wrong-ca-{gw.port}") == []


def test_server_name_is_the_name_checked_when_the_target_is_an_address(
    gw: GatewayProcess, servers: Servers
) -> None:
    named = get(gw.port, f"/named/ok/named-{gw.port}")
    unnamed = get(gw.port, f"/unnamed/ok/unnamed-{gw.port}")

    assert (named.status, named.body) == (200, f"named-{gw.port}".encode())
    assert unnamed.status == 502, "a certificate for orders.internal must not pass for 127.0.0.1"
    [seen] = servers.by_name.requests_for(f"/ok/named-{gw.port}")
    assert seen.client == "gw-client"


def test_verify_false_reaches_an_untrusted_server_and_is_logged_by_name(
    gw: GatewayProcess, servers: Servers
) -> None:
    answer = get(gw.port, f"/unverified/ok/unverified-{gw.port}")

    assert (answer.status, answer.body) == (200, f"unverified-{gw.port}".encode())
    assert "upstreams.unverified.tls.verify is false" in gw.log_text()
    assert "NOT authenticated" in gw.log_text()


def test_active_checks_use_the_upstreams_tls_settings(gw: GatewayProcess, servers: Servers) -> None:
    path = os.path.join(gw.env["GW_RUNTIME_DIR"], TABLE_FILE)

    def checks() -> dict[str, dict[str, Any]]:
        return {
            entry["upstream"]: entry["active"]
            for entry in snapshot(path)
            if entry["kind"] == "target" and entry["active"] is not None
        }

    assert wait_for(lambda: not checks().get("checked_no_client_cert", {"up": True})["up"])
    assert wait_for(lambda: checks().get("mutual", {}).get("streak", 0) >= 2), checks()
    assert checks()["mutual"]["up"] is True
    assert checks()["mutual"]["last_status"] == 200
    assert {s.client for s in servers.by_ip.requests_for("/ok/check")} == {"gw-client"}
    assert get(gw.port, "/checked_no_client_cert/ok/x").json()["error"] == "no_healthy_target"


def test_a_gateway_with_a_bad_ca_file_refuses_to_start_and_says_where(
    servers: Servers, tmp_path: Path
) -> None:
    missing = tmp_path / "missing-ca.pem"
    config = _config(servers)
    config["upstreams"]["mutual"]["tls"]["ca_file"] = str(missing)
    gateway = start_gateway(config, workers=1, wait=False)
    try:
        assert gateway.proc.wait(timeout=30) != 0
    finally:
        gateway.stop()
    assert f"upstreams.mutual.tls.ca_file: cannot read '{missing}'" in gateway.log_text()
