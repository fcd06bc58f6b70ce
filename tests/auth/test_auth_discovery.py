"""OpenID Connect Discovery against a real provider on 127.0.0.1: ``jwks_uri`` found in
``{issuer}/.well-known/openid-configuration``, with the key-set fetch's timeouts, backoff and
last-good keys, and a document for another issuer refused."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from gw.auth import Authenticator, AuthSettings, AuthUnavailable
from tests.auth.fakes import FakeClock, settle_refreshes
from tests.support.idp_server import IdpServer, start_idp_server
from tests.support.tokens import AUDIENCE, SigningKey, bearer, claims

DISCOVERY = "/.well-known/openid-configuration"


@pytest.fixture
def idp(rsa: SigningKey) -> Iterator[IdpServer]:
    server = start_idp_server(rsa)
    yield server
    server.close()


def discovering(idp: IdpServer, clock: FakeClock, **overrides: Any) -> Authenticator:
    entry = {"issuer": idp.issuer, "discovery": True, "audiences": [AUDIENCE], **overrides}
    settings = AuthSettings.model_validate({"issuers": [entry], "jwks_timeout": 0.5})
    return Authenticator(settings, clock=clock)


def test_discovery_finds_the_key_set(idp: IdpServer, rsa: SigningKey, clock: FakeClock) -> None:
    authenticator = discovering(idp, clock)
    assert idp.paths == []  # nothing at construction
    token = rsa.mint(claims(iss=idp.issuer))
    for _ in range(3):
        identity = authenticator.authenticate("/api", bearer(token))
        assert identity is not None and identity.issuer == idp.issuer
    assert idp.paths == [DISCOVERY, "/jwks"]


def test_a_document_for_another_issuer_is_refused(
    idp: IdpServer, rsa: SigningKey, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    idp.discovery_issuer = idp.issuer + "/"  # not exactly ours: OIDC Discovery 4.3
    authenticator = discovering(idp, clock)
    token = rsa.mint(claims(iss=idp.issuer))
    with caplog.at_level(logging.WARNING, logger="gw.auth"), pytest.raises(AuthUnavailable) as info:
        authenticator.authenticate("/api", bearer(token))
    assert info.value.status == 503 and info.value.code == "auth_unavailable"
    assert idp.fetches("/jwks") == 0  # the keys it names are never fetched
    assert any("the discovery document is for issuer" in r.getMessage() for r in caplog.records)


def test_a_discovered_plain_http_key_set_off_loopback_is_refused(
    idp: IdpServer, rsa: SigningKey, clock: FakeClock
) -> None:
    idp.jwks_uri = "http://keys.example.net/jwks"
    authenticator = discovering(idp, clock)
    with pytest.raises(AuthUnavailable):
        authenticator.authenticate("/api", bearer(rsa.mint(claims(iss=idp.issuer))))


def test_discovery_down_at_start_is_503_until_it_answers(
    idp: IdpServer, rsa: SigningKey, clock: FakeClock
) -> None:
    idp.go_down()
    authenticator = discovering(idp, clock)  # the gateway starts without its provider
    token = rsa.mint(claims(iss=idp.issuer))
    with pytest.raises(AuthUnavailable):
        authenticator.authenticate("/api", bearer(token))
    idp.come_back()
    clock.advance(1)  # the first retry's backoff
    assert authenticator.authenticate("/api", bearer(token)) is not None
    assert idp.paths == [DISCOVERY, "/jwks"]


def test_known_keys_outlive_a_later_discovery_outage(
    idp: IdpServer, rsa: SigningKey, clock: FakeClock
) -> None:
    authenticator = discovering(idp, clock)
    token = rsa.mint(claims(iss=idp.issuer))
    assert authenticator.authenticate("/api", bearer(token))
    idp.go_down()
    clock.advance(301)  # the key set has expired: a refresh is tried, and fails
    assert authenticator.authenticate("/api", bearer(token))
    settle_refreshes()
    assert authenticator.authenticate("/api", bearer(token))


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"discovery": True, "jwks_uri": "https://idp.example/jwks"}, "exactly one of"),
        ({"discovery": True, "issuer": "http://idp.example"}, "only on loopback"),
        ({"discovery": True, "audiences": None}, "audiences must list"),
    ],
)
def test_discovery_settings_are_refused_with_a_reason(entry: dict[str, Any], problem: str) -> None:
    data = {"issuer": "https://idp.example", "audiences": [AUDIENCE], **entry}
    with pytest.raises(ValueError, match=problem):
        AuthSettings.model_validate({"issuers": [data]})
