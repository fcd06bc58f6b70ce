"""Tokens seen before are accepted without verifying them again, and only while that is safe.

APPSEC cases (gw.auth.remembered): a remembered token dies at its ``exp``, with the key that
verified it (rotation, removal), with any change to its bytes; failures are never
remembered; the route's rules apply on every request.
"""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
import pytest

from gw.auth import Authenticator, AuthSettings, Forbidden, InvalidToken, RoutePolicy
from gw.auth.remembered import Remembered
from tests.auth.fakes import FakeClock
from tests.support.tokens import AUDIENCE, ISSUER, SigningKey, claims, jwks

PATH = "/api/orders"


class KeySets:
    """A JWKS endpoint whose document the test replaces (rotation, removal)."""

    def __init__(self, *keys: SigningKey) -> None:
        self.document = jwks(*keys)
        self.fetches = 0

    def __call__(self, uri: str, timeout: float) -> bytes:
        self.fetches += 1
        return json.dumps(self.document).encode()


def authenticator(keys: KeySets, clock: FakeClock) -> Authenticator:
    settings = AuthSettings.model_validate(
        {"type": "jwt", "issuer": ISSUER, "jwks_uri": "https://idp/jwks", "audiences": [AUDIENCE]}
    )
    return Authenticator(settings, fetcher=keys, clock=clock)


def bearer(token: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {token}")]


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every signature check PyJWT is asked for."""
    seen: list[str] = []
    real = jwt.decode

    def counting(token: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(token)
        return real(token, *args, **kwargs)

    monkeypatch.setattr("gw.auth.tokens.jwt.decode", counting)
    return seen


def test_a_token_seen_before_is_not_verified_again(
    rsa: SigningKey, clock: FakeClock, decodes: list[str]
) -> None:
    auth = authenticator(KeySets(rsa), clock)
    token = rsa.mint(claims())
    first = auth.authenticate(PATH, bearer(token))
    again = auth.authenticate(PATH, bearer(token))
    assert first is not None and again is first
    assert decodes == [token]


def test_a_failure_is_never_remembered(
    rsa: SigningKey, attacker: SigningKey, clock: FakeClock, decodes: list[str]
) -> None:
    auth = authenticator(KeySets(rsa), clock)
    forged = attacker.mint(claims(), kid=rsa.kid)  # right kid, wrong key
    for _ in range(2):
        with pytest.raises(InvalidToken) as info:
            auth.authenticate(PATH, bearer(forged))
        assert info.value.reason == "bad_signature"
    assert decodes == [forged, forged]


def test_another_signature_on_the_same_claims_is_verified_in_full(
    rsa: SigningKey, clock: FakeClock
) -> None:
    auth = authenticator(KeySets(rsa), clock)
    token = rsa.mint(claims())
    assert auth.authenticate(PATH, bearer(token)) is not None
    head, body, signature = token.split(".")
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    with pytest.raises(InvalidToken) as info:
        auth.authenticate(PATH, bearer(f"{head}.{body}.{flipped}"))
    assert info.value.reason in {"bad_signature", "malformed"}


def test_a_remembered_token_expires_at_its_exp(rsa: SigningKey, clock: FakeClock) -> None:
    auth = authenticator(KeySets(rsa), clock)
    token = rsa.mint(claims(ttl=1))
    assert auth.authenticate(PATH, bearer(token)) is not None
    time.sleep(
        max(0.0, jwt.decode(token, options={"verify_signature": False})["exp"] - time.time()) + 0.05
    )
    # Past exp: verified afresh, and PyJWT's leeway (30 s here) is the only grace it gets.
    assert auth._remembered.get(token) is None


def test_a_rotation_that_removes_the_key_ends_a_remembered_token(
    rsa: SigningKey, rsa2: SigningKey, clock: FakeClock, decodes: list[str]
) -> None:
    keys = KeySets(rsa)
    auth = authenticator(keys, clock)
    old = rsa.mint(claims())
    assert auth.authenticate(PATH, bearer(old)) is not None
    keys.document = jwks(rsa2)  # the identity provider rotated and dropped rsa-1
    clock.advance(3600)  # past the key set's cache time: the next use refreshes it
    auth.authenticate(PATH, bearer(old))  # still served by the old set while it refreshes
    assert auth._verifier is not None
    [issuer] = auth._verifier._issuers.values()
    assert issuer.jwks is not None and issuer.jwks.settle(5)
    with pytest.raises(InvalidToken) as info:
        auth.authenticate(PATH, bearer(old))
    assert info.value.reason == "unknown_kid"
    assert auth.authenticate(PATH, bearer(rsa2.mint(claims()))) is not None


def test_the_routes_rules_apply_to_a_remembered_token(rsa: SigningKey, clock: FakeClock) -> None:
    auth = authenticator(KeySets(rsa), clock)
    token = rsa.mint(claims(role="customer"))
    assert auth.authenticate(PATH, bearer(token)) is not None
    admins = RoutePolicy.model_validate({"roles": ["admin"]})
    with pytest.raises(Forbidden):
        auth.authenticate(PATH, bearer(token), admins)


def test_the_memory_is_bounded_and_drops_the_oldest() -> None:
    memory: Remembered[str] = Remembered(lambda entry: True, capacity=2)
    for token in ("a", "b", "c"):
        memory.put(token, token.upper())
    assert len(memory) == 2
    assert (memory.get("a"), memory.get("b"), memory.get("c")) == (None, "B", "C")
