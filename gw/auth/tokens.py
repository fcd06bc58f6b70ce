"""JWT verification: our own strict look at the header, then PyJWT for signature and claims.

The order matters. Before any key is touched the token's size, shape and header are checked
here: ``alg`` must be one the issuer allows (``none`` never is), ``jku``, ``x5u``, ``jwk``
and ``x5c`` headers are ignored entirely (keys never come from the token), and ``exp``,
``nbf`` and ``iat`` must be JSON numbers (RFC 7519 NumericDate). The unverified
``iss`` only chooses which issuer's keys to try; PyJWT then verifies the signature with
exactly one algorithm and checks ``exp`` (required), ``nbf``, ``iat``, ``iss`` and ``aud``.
PyJWT's exceptions are translated here and never leave this module.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import jwt
from jwt import exceptions as jwt_errors

from gw.auth.discovery import DiscoveringFetcher
from gw.auth.errors import AuthUnavailable, InvalidToken
from gw.auth.jwks import Fetcher, FetchObserver, JwksCache, KeysUnavailable
from gw.auth.settings import HMAC_ALGORITHMS, AuthSettings

_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_MAX_KID = 256
_NUMERIC_DATES = ("exp", "nbf", "iat")

# Client-facing sentences per reason; fixed text, so nothing from the token is echoed back.
MESSAGES: Mapping[str, str] = MappingProxyType(
    {
        "token_too_large": "the token is too large",
        "malformed": "the token is malformed",
        "alg_none": "unsigned tokens are not accepted",
        "alg_not_allowed": "the token's signing algorithm is not accepted",
        "unknown_issuer": "the token's issuer is not accepted",
        "unknown_kid": "the token's signing key is not known",
        "bad_signature": "the token's signature is invalid",
        "expired": "the token has expired",
        "not_yet_valid": "the token is not valid yet",
        "wrong_issuer": "the token's issuer is not accepted",
        "wrong_audience": "the token is not meant for this API",
        "missing_claim": "the token lacks a required claim",
        "invalid_claim": "the token has an invalid claim",
        "unsafe_claim": "the token has a claim that cannot be forwarded",
        "inactive": "the token is not active",  # an introspection answer
    }
)

# Reasons PyJWT gives only after the signature verified: the token is the issuer's own.
_SIGNED_REASONS = frozenset(
    {"expired", "not_yet_valid", "wrong_audience", "wrong_issuer", "missing_claim"}
)

# Most specific first: InvalidSignatureError is a DecodeError, and so on.
_TRANSLATIONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt_errors.ExpiredSignatureError, "expired"),
    (jwt_errors.ImmatureSignatureError, "not_yet_valid"),
    (jwt_errors.InvalidAudienceError, "wrong_audience"),
    (jwt_errors.InvalidIssuerError, "wrong_issuer"),
    (jwt_errors.MissingRequiredClaimError, "missing_claim"),
    (jwt_errors.InvalidSignatureError, "bad_signature"),
    (jwt_errors.InvalidAlgorithmError, "alg_not_allowed"),
    (jwt_errors.InvalidKeyError, "bad_signature"),
    (jwt_errors.DecodeError, "malformed"),
)


@dataclass(frozen=True)
class IssuerKeys:
    """One issuer compiled for verification: where its keys come from and what it may use."""

    issuer: str
    audiences: tuple[str, ...]
    algorithms: frozenset[str]
    secret: bytes | None = None
    jwks: JwksCache | None = None

    def keys_for(self, alg: str, kid: str | None) -> list[Any]:
        """Return the keys that may verify a token signed with ``alg`` (and ``kid``).

        APPSEC: the HMAC secret is offered only for HS* algorithms and key-set keys only for
        the asymmetric algorithm that matches their type, so no key is ever read as another
        kind of key (the HS256-signed-with-the-public-key attack).
        """
        if alg in HMAC_ALGORITHMS:
            return [self.secret] if self.secret is not None else []
        if self.jwks is None:
            return []
        return [k.key for k in self.jwks.keys_for(kid) if k.fits(alg)]


@dataclass(frozen=True, eq=False)
class VerifiedToken:
    """What a verified token says, and what vouched for it (see ``TokenVerifier.trusts``)."""

    claims: Mapping[str, Any]
    issuer: str
    alg: str
    kid: str | None
    key: Any = field(default=None, repr=False)  # the key that verified the signature
    expires: float = 0.0  # its ``exp`` (seconds since the epoch)


class TokenVerifier:
    """Verify bearer JWTs against the configured issuers."""

    def __init__(
        self, issuers: Sequence[IssuerKeys], *, leeway: int = 30, max_token_bytes: int = 8192
    ) -> None:
        self._issuers = {i.issuer: i for i in issuers}
        self._leeway = leeway
        self._max_bytes = max_token_bytes

    @classmethod
    def from_settings(
        cls,
        settings: AuthSettings,
        fetcher: Fetcher,
        clock: Callable[[], float] = time.monotonic,
        observe: FetchObserver | None = None,
    ) -> TokenVerifier:
        """Compile the settings' issuers; issuers sharing a key-set URI share one cache."""
        caches: dict[str, JwksCache] = {}
        issuers = []
        for entry in settings.all_issuers():
            if not entry.verifies_jwts:
                continue  # introspection only: its JWTs (if any) are unknown_issuer
            cache = None
            if entry.jwks_uri is not None:
                cache = caches.setdefault(
                    entry.jwks_uri, _cache(entry.jwks_uri, settings, fetcher, clock, observe)
                )
            elif entry.discovery:
                finder = DiscoveringFetcher(entry.issuer, fetcher)
                uri = entry.discovery_uri()
                cache = caches.setdefault(uri, _cache(uri, settings, finder, clock, observe))
            secret = entry.secret.get_secret_value().encode() if entry.secret else None
            audiences = tuple(entry.audiences or ())
            algorithms = entry.allowed_algorithms()
            issuers.append(IssuerKeys(entry.issuer, audiences, algorithms, secret, cache))
        return cls(issuers, leeway=settings.leeway, max_token_bytes=settings.max_token_bytes)

    def verify(self, token: str) -> VerifiedToken:
        """Return the verified claims of ``token``.

        Raises:
            InvalidToken: for any token that is not acceptable (``reason`` says why).
            AuthUnavailable: when the issuer's keys have never been obtained.
        """
        if len(token) > self._max_bytes:
            raise _invalid("token_too_large", {})
        header, payload = _peek(token)
        alg, kid = header["alg"], header.get("kid")
        detail = {"alg": alg[:32], "kid": kid, "iss": _short(payload.get("iss"))}
        _check_numeric_dates(payload, detail)
        issuer = self._issuer_for(alg, payload, detail)
        keys = self._keys(issuer, alg, kid, detail)
        claims, key = self._decode(token, issuer, alg, keys, detail)
        expires = float(claims["exp"])  # required, and a finite number (checked above)
        return VerifiedToken(MappingProxyType(claims), issuer.issuer, alg, kid, key, expires)

    def trusts(self, verified: VerifiedToken) -> bool:
        """Whether a token verified earlier is still good without verifying it again: it has
        not expired (``exp``, no leeway), and the key that verified it is still offered for
        its ``alg`` and ``kid`` (a JWKS refresh, rotation or removal, or a reload, makes new
        key objects, so the token is verified afresh against the new set)."""
        if time.time() >= verified.expires:
            return False
        issuer = self._issuers.get(verified.issuer)
        if issuer is None:
            return False
        try:
            offered = issuer.keys_for(verified.alg, verified.kid)
        except KeysUnavailable:
            return False
        # By identity: the very key object that verified it. PERF: a loop, not any() over a
        # generator, which costs more than the check itself for the one or two keys of a kid.
        for key in offered:  # noqa: SIM110
            if key is verified.key:
                return True
        return False

    def _issuer_for(
        self, alg: str, payload: Mapping[str, Any], detail: dict[str, Any]
    ) -> IssuerKeys:
        if alg.lower() == "none":
            raise _invalid("alg_none", detail)
        iss = payload.get("iss")
        issuer = self._issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise _invalid("unknown_issuer", detail)
        if alg not in issuer.algorithms:
            raise _invalid("alg_not_allowed", detail)
        return issuer

    def _keys(
        self, issuer: IssuerKeys, alg: str, kid: str | None, detail: dict[str, Any]
    ) -> list[Any]:
        try:
            keys = issuer.keys_for(alg, kid)
        except KeysUnavailable:
            raise AuthUnavailable(detail=detail) from None
        if not keys:
            raise _invalid("unknown_kid", detail)
        return keys

    def _decode(
        self,
        token: str,
        issuer: IssuerKeys,
        alg: str,
        keys: list[Any],
        detail: dict[str, Any],
    ) -> tuple[dict[str, Any], Any]:
        """Let PyJWT verify with each candidate key in turn; return the claims and the key
        that verified them; translate what PyJWT raises."""
        reason = "bad_signature"
        for key in keys:
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=[alg],
                    audience=list(issuer.audiences),
                    issuer=issuer.issuer,
                    leeway=self._leeway,
                    options={"require": ["exp"], "enforce_minimum_key_length": True},
                )
                return claims, key
            except jwt_errors.InvalidSignatureError:
                continue
            except (jwt_errors.PyJWTError, ValueError, TypeError) as ex:
                reason = _reason(ex)
                break
        raise _invalid(reason, detail, signed=reason in _SIGNED_REASONS)


def _cache(
    uri: str,
    settings: AuthSettings,
    fetcher: Fetcher,
    clock: Callable[[], float],
    observe: FetchObserver | None,
) -> JwksCache:
    return JwksCache(
        uri,
        fetcher,
        cache_seconds=settings.jwks_cache_seconds,
        cooldown=settings.jwks_refetch_cooldown,
        timeout=settings.jwks_timeout,
        clock=clock,
        observe=observe,
    )


def _peek(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Decode the header and payload without verifying anything; check the header's shape."""
    parts = token.split(".")
    if len(parts) != 3 or not all(_SEGMENT.fullmatch(p) for p in parts[:2]):
        raise _invalid("malformed", {})
    if not _SEGMENT.fullmatch(parts[2]):
        # An empty signature is the "alg: none" shape; anything else non-base64url is junk.
        reason = "alg_none" if parts[2] == "" else "malformed"
        raise _invalid(reason, {})
    header, payload = _json_segment(parts[0]), _json_segment(parts[1])
    alg, kid = header.get("alg"), header.get("kid")
    if not isinstance(alg, str) or not alg:
        raise _invalid("malformed", {})
    if kid is not None and (not isinstance(kid, str) or not 0 < len(kid) <= _MAX_KID):
        raise _invalid("malformed", {"alg": alg[:32]})
    return header, payload


def _check_numeric_dates(payload: Mapping[str, Any], detail: dict[str, Any]) -> None:
    """Refuse ``exp``/``nbf``/``iat`` unless each (when present) is a finite JSON number.

    APPSEC: PyJWT reads these with ``int()``, so ``"exp": "4102444800"`` (a string) would pass
    and ``"nbf": true`` would mean 1970. RFC 7519 section 2 says a NumericDate is a number;
    anything else is a token nobody meant to issue. Checked before any key is touched.
    """
    for claim in _NUMERIC_DATES:
        if claim in payload and not _is_numeric_date(payload[claim]):
            raise _invalid("invalid_claim", {**detail, "claim": claim})


def _is_numeric_date(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _json_segment(segment: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = json.loads(raw, object_pairs_hook=_unique_keys)
    except (binascii.Error, ValueError, RecursionError):
        raise _invalid("malformed", {}) from None
    if not isinstance(value, dict):
        raise _invalid("malformed", {})
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # APPSEC: with duplicate names ("alg" twice) two parsers may read two different tokens.
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate member name")
    return result


def _reason(ex: Exception) -> str:
    for kind, reason in _TRANSLATIONS:
        if isinstance(ex, kind):
            return reason
    return "invalid_claim"


def _invalid(reason: str, detail: Mapping[str, Any], *, signed: bool = False) -> InvalidToken:
    return InvalidToken(MESSAGES[reason], reason=reason, detail=detail, signed=signed)


def _short(value: Any) -> str | None:
    return value[:128] if isinstance(value, str) else None
