"""Mint good and hostile JWTs for tests, with keys generated on the spot by ``cryptography``.

Good tokens come from ``SigningKey.mint`` (RS256, ES256, EdDSA) or ``mint_hs256``. The hostile
ones reproduce the classic attacks and mistakes: expired, not yet valid, wrong ``iss``/``aud``,
unknown ``kid``, ``alg: none``, HS256 signed with the RSA public key PEM as secret, a ``jku``
header pointing at an attacker's key set, and oversized tokens. ``hostile_corpus`` lists them
all with the status and error code a client must see.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

ISSUER = "https://auth.example.com"
AUDIENCE = "api.example.com"
SECRET = "test-secret-that-is-long-enough-for-hs256!"


@dataclass(frozen=True)
class SigningKey:
    """A private key, its ``kid`` and ``alg``, and its public half as a JWK and a PEM."""

    kid: str
    alg: str
    private_key: Any
    public_jwk: dict[str, Any]
    public_pem: bytes

    def mint(self, claims: dict[str, Any], **header: Any) -> str:
        """Sign ``claims`` with this key; ``header`` fields are added (``kid=None`` drops it)."""
        fields = {k: v for k, v in {"kid": self.kid, **header}.items() if v is not None}
        return jwt.encode(claims, self.private_key, algorithm=self.alg, headers=fields)


def rsa_key(kid: str = "rsa-1", bits: int = 2048) -> SigningKey:
    """Generate an RS256 key."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    jwk = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    return _signing_key(kid, "RS256", private, jwk)


def ec_key(kid: str = "ec-1") -> SigningKey:
    """Generate an ES256 (P-256) key."""
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(ECAlgorithm.to_jwk(private.public_key()))
    return _signing_key(kid, "ES256", private, jwk)


def ed_key(kid: str = "ed-1") -> SigningKey:
    """Generate an EdDSA (Ed25519) key."""
    private = ed25519.Ed25519PrivateKey.generate()
    jwk = json.loads(OKPAlgorithm.to_jwk(private.public_key()))
    return _signing_key(kid, "EdDSA", private, jwk)


def _signing_key(kid: str, alg: str, private: Any, jwk: dict[str, Any]) -> SigningKey:
    jwk = {**jwk, "kid": kid, "use": "sig", "alg": alg}
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return SigningKey(kid, alg, private, jwk, pem)


def bearer(token: str) -> list[tuple[str, str]]:
    """Return the headers of a request carrying ``token`` as a bearer credential."""
    return [("Authorization", f"Bearer {token}"), ("Accept", "application/json")]


def jwks(*keys: SigningKey) -> dict[str, Any]:
    """Return a JWKS document publishing the public halves of ``keys``."""
    return {"keys": [k.public_jwk for k in keys]}


def claims(
    *,
    iss: str = ISSUER,
    aud: str | list[str] = AUDIENCE,
    sub: str = "usr_8a3f",
    role: str | None = "customer",
    ttl: int = 300,
    **extra: Any,
) -> dict[str, Any]:
    """Return a claim set valid for ``ttl`` seconds from now."""
    now = int(time.time())
    body: dict[str, Any] = {"iss": iss, "aud": aud, "sub": sub, "iat": now, "exp": now + ttl}
    if role is not None:
        body["role"] = role
    body.update(extra)
    return {k: v for k, v in body.items() if v is not None}


def mint_hs256(secret: str | bytes, body: dict[str, Any], **header: Any) -> str:
    """Sign ``body`` with HS256 by hand (PyJWT refuses PEM-looking secrets, attackers do not)."""
    key = secret.encode() if isinstance(secret, str) else secret
    return _sign_by_hand({"alg": "HS256", "typ": "JWT", **header}, body, key)


def _sign_by_hand(header: dict[str, Any], body: dict[str, Any], key: bytes) -> str:
    signing_input = f"{_b64(header)}.{_b64(body)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(signature)}"


def _b64(value: dict[str, Any]) -> str:
    return _b64url(json.dumps(value, separators=(",", ":")).encode())


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# -- hostile tokens ---------------------------------------------------------------------------


def expired(key: SigningKey, **kw: Any) -> str:
    """A token that expired an hour ago (well beyond any leeway)."""
    now = int(time.time())
    return key.mint(claims(**kw) | {"iat": now - 7200, "exp": now - 3600})


def not_yet_valid(key: SigningKey, **kw: Any) -> str:
    """A token whose ``nbf`` is an hour in the future."""
    return key.mint(claims(**kw) | {"nbf": int(time.time()) + 3600})


def issued_in_future(key: SigningKey, **kw: Any) -> str:
    """A token whose ``iat`` is an hour in the future."""
    return key.mint(claims(**kw) | {"iat": int(time.time()) + 3600})


def without_exp(key: SigningKey, **kw: Any) -> str:
    """A token that never expires (no ``exp``)."""
    body = claims(**kw)
    del body["exp"]
    return key.mint(body)


def wrong_issuer(key: SigningKey) -> str:
    """Signed by a known key, but claiming another issuer."""
    return key.mint(claims(iss="https://evil.example.com"))


def wrong_audience(key: SigningKey) -> str:
    """Signed by a known key, but meant for another API."""
    return key.mint(claims(aud="other-api.example.com"))


def unknown_kid(key: SigningKey, kid: str = "no-such-kid") -> str:
    """Signed by ``key`` but naming a ``kid`` the key set does not publish."""
    return key.mint(claims(), kid=kid)


def alg_none(**kw: Any) -> str:
    """An unsigned token (``alg: none``, empty signature)."""
    header = {"alg": "none", "typ": "JWT"}
    return f"{_b64(header)}.{_b64(claims(**kw))}."


def alg_none_variants(**kw: Any) -> list[str]:
    """``none`` spelled several ways, with and without a signature segment."""
    body = _b64(claims(**kw))
    tokens = [f"{_b64({'alg': alg})}.{body}." for alg in ("none", "None", "NONE", "nOnE")]
    tokens.append(f"{_b64({'alg': 'none'})}.{body}.c2lnbmF0dXJl")
    return tokens


def hs256_with_public_key(key: SigningKey, **kw: Any) -> str:
    """The algorithm-confusion attack: HS256 keyed with the RSA public key PEM, same ``kid``."""
    return mint_hs256(key.public_pem, claims(**kw), kid=key.kid)


def with_jku(attacker: SigningKey, jku: str, **kw: Any) -> str:
    """Signed by the attacker's key, whose key set the ``jku`` header points at."""
    return attacker.mint(claims(**kw), jku=jku, x5u=jku)


def with_embedded_jwk(attacker: SigningKey, **kw: Any) -> str:
    """Signed by the attacker's key, which the token carries in its ``jwk`` header."""
    return attacker.mint(claims(**kw), jwk=attacker.public_jwk)


def oversized(key: SigningKey, size: int = 16384) -> str:
    """A correctly signed token longer than ``size`` bytes (a padded claim)."""
    return key.mint(claims(padding="x" * size))


def impostor(attacker: SigningKey, good: SigningKey) -> str:
    """Signed by the attacker's key of the same type, naming the good key's ``kid``."""
    return attacker.mint(claims(), kid=good.kid)


def tampered(key: SigningKey) -> str:
    """A good token whose payload was changed after signing (role escalated)."""
    header, _, signature = key.mint(claims()).split(".")
    return f"{header}.{_b64(claims(role='admin'))}.{signature}"


@dataclass(frozen=True)
class Hostile:
    """One hostile request credential and what the client must get back."""

    name: str
    token: str
    status: int = 401
    code: str = "invalid_token"
    reason: str = ""


def hostile_corpus(good: SigningKey, attacker: SigningKey, jku: str) -> list[Hostile]:
    """Every hostile token built against a gateway that trusts ``good`` (issuer ``ISSUER``).

    ``attacker`` is a key the gateway does not know; ``jku`` a URL serving the attacker's set.
    """
    corpus = [
        Hostile("expired", expired(good), reason="expired"),
        Hostile("nbf in the future", not_yet_valid(good), reason="not_yet_valid"),
        Hostile("iat in the future", issued_in_future(good), reason="not_yet_valid"),
        Hostile("no exp", without_exp(good), reason="missing_claim"),
        Hostile("wrong iss", wrong_issuer(good), reason="unknown_issuer"),
        Hostile("wrong aud", wrong_audience(good), reason="wrong_audience"),
        Hostile("unknown kid", unknown_kid(good), reason="unknown_kid"),
        Hostile("HS256 with the public key", hs256_with_public_key(good), reason="alg_not_allowed"),
        Hostile("jku header", with_jku(attacker, jku), reason="unknown_kid"),
        Hostile("embedded jwk", with_embedded_jwk(attacker), reason="unknown_kid"),
        Hostile("attacker key, known kid", impostor(attacker, good), reason="bad_signature"),
        Hostile("tampered payload", tampered(good), reason="bad_signature"),
        Hostile("oversized", oversized(good), reason="token_too_large"),
        Hostile("garbage", "not-a-jwt", reason="malformed"),
        Hostile("two segments", "eyJhbGciOiJSUzI1NiJ9.e30", reason="malformed"),
    ]
    corpus += [
        Hostile(f"alg none #{i}", token, reason="alg_none")
        for i, token in enumerate(alg_none_variants())
    ]
    return corpus
