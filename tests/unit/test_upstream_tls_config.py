"""An upstream's ``tls:`` block is checked, and its files loaded, with the config: every
mistake refuses the config and names its exact key; ``verify: false`` is logged by name."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any

import pytest

from gw.config.load import parse_config
from gw.errors import ConfigError
from tests.support.tls import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def config(tls: dict[str, Any], target: str = "https://127.0.0.1:8443") -> dict[str, Any]:
    return {
        "upstreams": {"orders": {"targets": [target], "tls": tls}},
        "routes": [{"path": "/**", "upstream": "orders"}],
    }


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, {})
    return info.value.problems


def mutual(pki: Pki, **changes: str) -> dict[str, Any]:
    files = {"ca_file": pki.ca, "client_cert": pki.client, "client_key": pki.client_key}
    return {**{k: str(v) for k, v in files.items()}, **changes}


def test_a_complete_block_compiles_into_one_context_shared_by_the_upstream(pki: Pki) -> None:
    upstream = parse_config(config({**mutual(pki), "server_name": "orders.internal"}), {})
    tls = upstream.upstreams["orders"].tls

    assert tls is not None and tls.server_name == "orders.internal"
    assert tls.context.verify_mode == ssl.CERT_REQUIRED and tls.context.check_hostname
    assert [c["subject"] for c in tls.context.get_ca_certs()] == [
        ((("commonName", "gw test CA"),),)
    ], "ca_file replaces the system store"


def test_every_https_upstream_gets_a_verifying_context_even_without_a_tls_block() -> None:
    data = config({})
    del data["upstreams"]["orders"]["tls"]
    tls = parse_config(data, {}).upstreams["orders"].tls
    assert tls is not None and tls.context.verify_mode == ssl.CERT_REQUIRED


def test_a_missing_ca_file_names_its_key(pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    assert problems_of(config(mutual(pki, ca_file=str(missing)))) == [
        f"upstreams.orders.tls.ca_file: cannot read '{missing}' (No such file or directory)"
    ]


def test_a_file_that_is_not_what_its_key_says_names_its_key(pki: Pki) -> None:
    swapped = mutual(pki, ca_file=str(pki.client_key), client_key=str(pki.ca))
    assert problems_of(config(swapped)) == [
        f"upstreams.orders.tls.ca_file: '{pki.client_key}' holds no PEM certificate",
        f"upstreams.orders.tls.client_key: '{pki.ca}' holds no PEM private key",
    ]


def test_a_key_of_another_certificate_is_refused_at_client_key(pki: Pki) -> None:
    [problem] = problems_of(config(mutual(pki, client_key=str(pki.server_ip_key))))
    assert problem.startswith("upstreams.orders.tls.client_key: ")
    assert "is not the key of client_cert" in problem


def test_client_cert_and_client_key_go_together(pki: Pki) -> None:
    [problem] = problems_of(config({"client_cert": str(pki.client)}))
    assert problem.startswith("upstreams.orders.tls: ")
    assert "client_cert and client_key go together" in problem


def test_relative_paths_are_refused(pki: Pki) -> None:
    [problem] = problems_of(config(mutual(pki, ca_file="ca.pem")))
    assert problem.startswith("upstreams.orders.tls.ca_file: ")
    assert "absolute path" in problem


def test_tls_on_an_upstream_without_https_targets_is_refused(pki: Pki) -> None:
    assert problems_of(config(mutual(pki), target="http://127.0.0.1:8080")) == [
        "upstreams.orders.tls: applies to https:// targets, and this upstream has none"
    ]


def test_verify_false_is_logged_as_a_warning_naming_the_upstream(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="gw.config"):
        tls = parse_config(config({"verify": False}), {}).upstreams["orders"].tls
    assert tls is not None and tls.context.verify_mode == ssl.CERT_NONE
    [record] = [r for r in caplog.records if r.name == "gw.config"]
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith("upstreams.orders.tls.verify is false: ")
    assert "NOT authenticated" in record.getMessage()
