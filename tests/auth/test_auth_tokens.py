"""JWT verification: what is accepted, and why everything else is rejected."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest

from gw.auth import AuthSettings, AuthUnavailable, InvalidToken
from gw.auth.jwks import JwksCache
from gw.auth.tokens import IssuerKeys, TokenVerifier
from tests.auth.fakes import FakeClock
from tests.support.tokens import (
    AUDIENCE,
    ISSUER,
    SECRET,
    SigningKey,
    claims,
    hs256_with_public_key,
    jwks,
    mint_hs256,
)


def static(document: dict[str, Any]) -> Any:
    body = json.dumps(document).encode()
    return lambda uri, timeout: body


def verifier(keys: list[SigningKey], clock: FakeClock, **settings: Any) -> TokenVerifier:
    data = {"issuer": ISSUER, "jwks_uri": "https://idp/jwks", "audiences": [AUDIENCE], **settings}
    return TokenVerifier.from_settings(
        AuthSettings.model_validate(data), static(jwks(*keys)), clock
    )


def reason(check: TokenVerifier, token: str) -> str:
    with pytest.raises(InvalidToken) as info:
        check.verify(token)
    assert info.value.status == 401 and info.value.code == "invalid_token"
    return info.value.reason


@pytest.mark.parametrize("name", ["rsa", "ec", "ed"])
def test_rs256_es256_eddsa_are_accepted(
    name: str, request: pytest.FixtureRequest, clock: FakeClock
) -> None:
    key: SigningKey = request.getfixturevalue(name)
    verified = verifier([key], clock).verify(key.mint(claims()))
    assert verified.claims["sub"] == "usr_8a3f"
    assert (verified.issuer, verified.alg, verified.kid) == (ISSUER, key.alg, key.kid)


def test_algorithm_outside_the_configured_list_is_rejected(
    rsa: SigningKey, ec: SigningKey, clock: FakeClock
) -> None:
    check = verifier([rsa, ec], clock, algorithms=["RS256"])
    assert check.verify(rsa.mint(claims())).alg == "RS256"
    assert reason(check, ec.mint(claims())) == "alg_not_allowed"


def test_key_of_another_type_under_the_same_kid_is_not_used(
    rsa: SigningKey, ec: SigningKey, clock: FakeClock
) -> None:
    """An ES256 token naming the RSA key's kid finds no key that fits ES256."""
    check = verifier([rsa, ec], clock)
    assert reason(check, ec.mint(claims(), kid="rsa-1")) == "unknown_kid"


def test_audience_may_be_one_of_a_list(rsa: SigningKey, clock: FakeClock) -> None:
    check = verifier([rsa], clock, audiences=["a", AUDIENCE])
    assert check.verify(rsa.mint(claims(aud=["other", AUDIENCE])))
    assert reason(check, rsa.mint(claims(aud=["other"]))) == "wrong_audience"


def test_missing_audience_is_rejected(rsa: SigningKey, clock: FakeClock) -> None:
    assert reason(verifier([rsa], clock), rsa.mint(claims(aud=None))) == "missing_claim"  # type: ignore[arg-type]


@pytest.mark.parametrize("shift", [-20, 20])
def test_leeway_absorbs_small_clock_skew(rsa: SigningKey, clock: FakeClock, shift: int) -> None:
    now = int(time.time())
    body = claims() | {"exp": now + shift, "nbf": now + shift, "iat": now + shift}
    if shift < 0:
        body |= {"nbf": now - 60, "iat": now - 60}
    else:
        body |= {"exp": now + 300}
    assert verifier([rsa], clock, leeway=30).verify(rsa.mint(body))
    expected = "expired" if shift < 0 else "not_yet_valid"
    assert reason(verifier([rsa], clock, leeway=0), rsa.mint(body)) == expected


def test_token_without_kid_is_tried_against_every_fitting_key(
    rsa: SigningKey, rsa2: SigningKey, clock: FakeClock
) -> None:
    token = rsa2.mint(claims(), kid=None)
    assert verifier([rsa, rsa2], clock).verify(token).claims["sub"] == "usr_8a3f"


def test_size_bound_comes_first(rsa: SigningKey, clock: FakeClock) -> None:
    check = verifier([rsa], clock, max_token_bytes=512)
    assert reason(check, rsa.mint(claims(note="x" * 400))) == "token_too_large"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "a.b",
        "a.b.c.d",
        "!!!.e30.c2ln",
        "e30.e30.c2ln",  # header without alg
        "W10.e30.c2ln",  # header is a list
        "eyJhbGciOiJSUzI1NiIsImFsZyI6Im5vbmUifQ.e30.c2ln",  # duplicate "alg"
        "eyJhbGciOiJSUzI1NiIsImtpZCI6MX0.e30.c2ln",  # kid is a number
        "eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln",  # payload is not JSON
        "eyJhbGciOiJSUzI1NiJ9.e30.c2ln=",  # padding
    ],
)
def test_malformed_tokens_are_rejected(token: str, rsa: SigningKey, clock: FakeClock) -> None:
    assert reason(verifier([rsa], clock), token) == "malformed"


def test_unknown_issuer_never_reaches_any_key(clock: FakeClock, rsa: SigningKey) -> None:
    calls = []

    def fetcher(uri: str, timeout: float) -> bytes:
        calls.append(uri)
        return json.dumps(jwks(rsa)).encode()

    settings = AuthSettings.model_validate(
        {"issuer": ISSUER, "jwks_uri": "https://idp/jwks", "audiences": [AUDIENCE]}
    )
    check = TokenVerifier.from_settings(settings, fetcher, clock)
    assert reason(check, rsa.mint(claims(iss="https://evil"))) == "unknown_issuer"
    assert reason(check, rsa.mint(claims(iss=None))) == "unknown_issuer"  # type: ignore[arg-type]
    assert calls == []


# -- shared secrets ------------------------------------------------------------------------


def secret_verifier(clock: FakeClock) -> TokenVerifier:
    settings = AuthSettings.model_validate(
        {"issuer": ISSUER, "secret": SECRET, "audiences": [AUDIENCE]}
    )
    return TokenVerifier.from_settings(settings, static({"keys": []}), clock)


def test_hs256_with_the_shared_secret_is_accepted(clock: FakeClock) -> None:
    verified = secret_verifier(clock).verify(mint_hs256(SECRET, claims()))
    assert verified.alg == "HS256" and verified.kid is None


def test_hs256_with_another_secret_is_rejected(clock: FakeClock) -> None:
    token = mint_hs256("x" * 40, claims())
    assert reason(secret_verifier(clock), token) == "bad_signature"


def test_asymmetric_token_for_a_secret_issuer_is_rejected(
    rsa: SigningKey, clock: FakeClock
) -> None:
    assert reason(secret_verifier(clock), rsa.mint(claims())) == "alg_not_allowed"


def test_several_issuers_each_with_their_own_keys(rsa: SigningKey, clock: FakeClock) -> None:
    settings = AuthSettings.model_validate(
        {
            "issuers": [
                {"issuer": ISSUER, "jwks_uri": "https://idp/jwks", "audiences": [AUDIENCE]},
                {"issuer": "https://legacy", "secret": SECRET, "audiences": [AUDIENCE]},
            ]
        }
    )
    check = TokenVerifier.from_settings(settings, static(jwks(rsa)), clock)
    assert check.verify(rsa.mint(claims())).issuer == ISSUER
    assert check.verify(mint_hs256(SECRET, claims(iss="https://legacy"))).issuer == (
        "https://legacy"
    )
    # The legacy secret never verifies a token that claims the JWKS issuer.
    assert reason(check, mint_hs256(SECRET, claims())) == "alg_not_allowed"
    assert reason(check, rsa.mint(claims(iss="https://legacy"))) == "alg_not_allowed"


def test_public_key_never_serves_as_hmac_secret_even_if_hs256_were_allowed(
    rsa: SigningKey, clock: FakeClock
) -> None:
    """Defence in depth: even an issuer compiled to allow HS256 has no secret to offer."""
    cache = JwksCache("https://idp/jwks", static(jwks(rsa)), clock=clock)
    issuer = IssuerKeys(ISSUER, (AUDIENCE,), frozenset({"RS256", "HS256"}), jwks=cache)
    check = TokenVerifier([issuer])
    assert reason(check, hs256_with_public_key(rsa)) == "unknown_kid"


def test_keys_never_obtained_is_503_not_401(rsa: SigningKey, clock: FakeClock) -> None:
    def down(uri: str, timeout: float) -> bytes:
        raise ConnectionRefusedError("refused")

    settings = AuthSettings.model_validate(
        {"issuer": ISSUER, "jwks_uri": "https://idp/jwks", "audiences": [AUDIENCE]}
    )
    check = TokenVerifier.from_settings(settings, down, clock)
    with pytest.raises(AuthUnavailable) as info:
        check.verify(rsa.mint(claims()))
    assert info.value.status == 503 and info.value.headers["Retry-After"] == "5"


def test_pyjwt_errors_do_not_leak(rsa: SigningKey, clock: FakeClock) -> None:
    import jwt

    body = claims() | {"iat": "yesterday"}
    with pytest.raises(InvalidToken) as info:
        verifier([rsa], clock).verify(rsa.mint(body))
    assert not isinstance(info.value, jwt.PyJWTError)
    assert info.value.__cause__ is None and info.value.__context__ is None


# -- NumericDate (RFC 7519 section 2): exp, nbf and iat are JSON numbers, nothing else --------


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize(
    "value",
    ["4102444800", "1", "", True, False, None, [4102444800], {"n": 1}],
    ids=["digits", "one", "empty", "true", "false", "null", "list", "object"],
)
def test_numeric_dates_must_be_json_numbers(claim: str, value: Any, clock: FakeClock) -> None:
    """A string, bool, null, list or object in exp/nbf/iat refuses the (well-signed) token."""
    body = claims() | {claim: value}
    assert reason(secret_verifier(clock), mint_hs256(SECRET, body)) == "invalid_claim"


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_numeric_dates_must_be_finite(claim: str, literal: str, clock: FakeClock) -> None:
    """Python's json reads NaN, Infinity and 1e400 as floats; none of them is a date."""
    body = json.dumps(claims() | {claim: 0}, separators=(",", ":"))
    body = body.replace(f'"{claim}":0', f'"{claim}":{literal}')
    assert literal in body
    token = _hs256_raw(body)
    assert reason(secret_verifier(clock), token) == "invalid_claim"


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
def test_integer_and_fractional_numeric_dates_are_accepted(claim: str, clock: FakeClock) -> None:
    now = int(time.time())
    value = {"exp": now + 300.5, "nbf": now - 10.25, "iat": now - 1.5}[claim]
    verified = secret_verifier(clock).verify(mint_hs256(SECRET, claims() | {claim: value}))
    assert verified.claims[claim] == value


def _hs256_raw(payload_json: str) -> str:
    """Sign a payload written by hand (the encoders refuse NaN and Infinity, attackers do not)."""
    header = base64.urlsafe_b64encode(b'{"alg":"HS256"}').rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(payload_json.encode()).rstrip(b"=").decode()
    signature = hmac.new(SECRET.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()


def test_only_refusals_after_a_good_signature_are_marked_signed(clock: FakeClock) -> None:
    """The guessing throttle counts forged tokens, not the issuer's own stale ones."""
    check = secret_verifier(clock)
    now = int(time.time())

    def refusal(token: str) -> InvalidToken:
        with pytest.raises(InvalidToken) as info:
            check.verify(token)
        return info.value

    stale = refusal(mint_hs256(SECRET, claims() | {"exp": now - 3600}))
    assert (stale.reason, stale.signed) == ("expired", True)
    other_api = refusal(mint_hs256(SECRET, claims(aud="another-api")))
    assert (other_api.reason, other_api.signed) == ("wrong_audience", True)
    forged = refusal(mint_hs256("f" * 40, claims() | {"exp": now - 3600}))
    assert (forged.reason, forged.signed) == ("bad_signature", False)
    assert refusal(mint_hs256(SECRET, claims() | {"exp": "1"})).signed is False
