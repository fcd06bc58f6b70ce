"""Fixtures for the auth tier: keys generated once, a real JWKS server, a clock to move."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gw.auth import Authenticator, AuthSettings
from tests.auth.fakes import FakeClock
from tests.support.jwks_server import JwksServer, start_jwks_server
from tests.support.tokens import AUDIENCE, ISSUER, SigningKey, ec_key, ed_key, jwks, rsa_key


@pytest.fixture(scope="session")
def rsa() -> SigningKey:
    return rsa_key("rsa-1")


@pytest.fixture(scope="session")
def rsa2() -> SigningKey:
    return rsa_key("rsa-2")


@pytest.fixture(scope="session")
def ec() -> SigningKey:
    return ec_key("ec-1")


@pytest.fixture(scope="session")
def ed() -> SigningKey:
    return ed_key("ed-1")


@pytest.fixture(scope="session")
def attacker() -> SigningKey:
    return rsa_key("attacker-1")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def jwks_server(rsa: SigningKey, ec: SigningKey, ed: SigningKey) -> Iterator[JwksServer]:
    server = start_jwks_server(jwks(rsa, ec, ed))
    yield server
    server.close()


@pytest.fixture
def make_auth(jwks_server: JwksServer, clock: FakeClock) -> Callable[..., Authenticator]:
    """Build an Authenticator on the real JWKS server; keyword arguments override settings."""

    def make(**overrides: Any) -> Authenticator:
        data: dict[str, Any] = {
            "type": "jwt",
            "jwks_uri": jwks_server.url,
            "issuer": ISSUER,
            "audiences": [AUDIENCE],
            "jwks_timeout": 0.5,
        }
        data.update(overrides)
        fetcher = data.pop("fetcher", None)
        return Authenticator(AuthSettings.model_validate(data), fetcher=fetcher, clock=clock)

    return make
