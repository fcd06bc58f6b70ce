"""Every hostile token in the corpus is refused with the status and code a client must see.

Run against a real JWKS server on 127.0.0.1 that publishes RS256, ES256 and EdDSA keys; the
attacker's key set is served too (for the ``jku`` token) and must never be fetched.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gw.auth import Authenticator, AuthSettings, Unauthorized
from tests.support.jwks_server import JwksServer, start_jwks_server
from tests.support.tokens import (
    AUDIENCE,
    ISSUER,
    Hostile,
    bearer,
    claims,
    ec_key,
    ed_key,
    hostile_corpus,
    jwks,
    rsa_key,
    with_jku,
)

GOOD = rsa_key("good-rsa")
OTHERS = (ec_key("good-ec"), ed_key("good-ed"))
ATTACKER = rsa_key("attacker-rsa")
JKU = "http://127.0.0.1:9/attacker/jwks.json"  # nothing listens; the live one is used below
CORPUS = {h.name: h for h in hostile_corpus(GOOD, ATTACKER, JKU)}


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[JwksServer, JwksServer]]:
    good, evil = start_jwks_server(jwks(GOOD, *OTHERS)), start_jwks_server(jwks(ATTACKER))
    yield good, evil
    good.close()
    evil.close()


@pytest.fixture(scope="module")
def authenticator(servers: tuple[JwksServer, JwksServer]) -> Authenticator:
    settings = AuthSettings.model_validate(
        {"jwks_uri": servers[0].url, "issuer": ISSUER, "audiences": [AUDIENCE], "leeway": 30}
    )
    return Authenticator(settings)


def test_the_good_keys_are_accepted(authenticator: Authenticator) -> None:
    for key in (GOOD, *OTHERS):
        identity = authenticator.authenticate("/api/orders", bearer(key.mint(claims())))
        assert identity is not None and identity.key_id == key.kid


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_hostile_token_is_refused(
    name: str, authenticator: Authenticator, servers: tuple[JwksServer, JwksServer]
) -> None:
    hostile: Hostile = CORPUS[name]
    with pytest.raises(Unauthorized) as info:
        authenticator.authenticate("/api/orders", bearer(hostile.token))
    error = info.value
    assert (error.status, error.code, error.reason) == (
        hostile.status,
        hostile.code,
        hostile.reason,
    )
    assert error.headers["WWW-Authenticate"].startswith('Bearer realm="gw", error="invalid_token"')


def test_no_hostile_token_made_the_gateway_fetch_anything_else(
    authenticator: Authenticator, servers: tuple[JwksServer, JwksServer]
) -> None:
    good, evil = servers
    tokens = [h.token for h in CORPUS.values()]
    tokens += [with_jku(ATTACKER, evil.url), ATTACKER.mint(claims(), jku=evil.url, kid=None)]
    for token in tokens:
        with pytest.raises(Unauthorized):
            authenticator.authenticate("/api/orders", bearer(token))
    assert evil.fetches == 0
    assert good.fetches == 1  # the first request's fetch; unknown kids wait for the cooldown
