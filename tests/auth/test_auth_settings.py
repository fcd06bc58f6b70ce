"""The auth block and route policies: seed 003 loads unchanged; mistakes read clearly."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from gw.auth import AuthSettings, RoutePolicy
from gw.auth.settings import ApiKeySettings
from tests.data.seeds import SEED_003_AUTH

SECRET = "s" * 32
DIGEST = "a" * 64


def messages(data: Any, model: type[Any] = AuthSettings) -> list[str]:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return [str(e["msg"]).removeprefix("Value error, ") for e in info.value.errors()]


def one_issuer(**fields: Any) -> dict[str, Any]:
    return {"issuer": "https://idp", "audiences": ["api"], **fields}


def test_seed_003_block_loads_unchanged_as_one_issuer() -> None:
    settings = AuthSettings.model_validate(json.loads(SEED_003_AUTH)["auth"])
    [issuer] = settings.all_issuers()
    assert issuer.issuer == "https://auth.example.com"
    assert issuer.jwks_uri == "https://auth.example.com/.well-known/jwks.json"
    assert issuer.audiences == ["api.example.com"]
    assert issuer.allowed_algorithms() == {"RS256", "ES256", "EdDSA"}
    assert settings.exclude_paths == ["/api/health", "/api/auth/login", "/api/auth/register"]


def test_defaults_are_the_documented_ones() -> None:
    settings = AuthSettings.model_validate(one_issuer(secret=SECRET))
    assert settings.all_issuers()[0].allowed_algorithms() == {"HS256"}
    assert settings.leeway == 30
    assert settings.claim_headers == {"sub": "X-User-Id", "role": "X-User-Role"}
    assert (settings.jwks_cache_seconds, settings.jwks_refetch_cooldown) == (300, 30)
    assert (settings.jwks_timeout, settings.max_token_bytes) == (2, 8192)


def test_several_identity_providers_under_issuers() -> None:
    settings = AuthSettings.model_validate(
        {
            "issuers": [
                {"issuer": "a", "jwks_uri": "https://a/jwks", "audiences": ["x"]},
                {"issuer": "b", "secret": SECRET, "audiences": ["y"], "algorithms": ["HS256"]},
            ]
        }
    )
    assert [i.issuer for i in settings.all_issuers()] == ["a", "b"]


def test_settings_are_frozen() -> None:
    settings = AuthSettings.model_validate(one_issuer(secret=SECRET))
    with pytest.raises(ValidationError):
        settings.leeway = 5


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_never_allowed(alg: str) -> None:
    [message] = messages(one_issuer(jwks_uri="https://idp/jwks", algorithms=["RS256", alg]))
    assert "never allowed" in message


def test_hmac_algorithm_with_a_jwks_is_refused() -> None:
    [message] = messages(one_issuer(jwks_uri="https://idp/jwks", algorithms=["HS256"]))
    assert message == "algorithm HS256 needs a secret, not a jwks_uri"


def test_asymmetric_algorithm_with_a_secret_is_refused() -> None:
    [message] = messages(one_issuer(secret=SECRET, algorithms=["RS256"]))
    assert message == "algorithm RS256 needs a jwks_uri, not a secret"


def test_short_secret_is_refused_with_a_way_to_make_a_good_one() -> None:
    [message] = messages(one_issuer(secret="your_jwt_secret_here"))
    assert "at least 32 bytes" in message and "secrets.token_urlsafe" in message


def test_hs512_needs_a_64_byte_secret() -> None:
    [message] = messages(one_issuer(secret=SECRET, algorithms=["HS512"]))
    assert "at least 64 bytes" in message


def test_unknown_algorithm_lists_known_ones() -> None:
    [message] = messages(one_issuer(jwks_uri="https://idp/jwks", algorithms=["RS1"]))
    assert message.startswith("unknown algorithm 'RS1' (known:")


@pytest.mark.parametrize(
    "uri", ["http://idp.example.com/jwks", "ftp://idp/jwks", "https://user:pw@idp/jwks", "/jwks"]
)
def test_jwks_uri_must_be_https_or_loopback_http(uri: str) -> None:
    assert messages(one_issuer(jwks_uri=uri))


@pytest.mark.parametrize(
    "uri", ["http://127.0.0.1:8080/jwks", "http://[::1]:9/jwks", "http://localhost/jwks"]
)
def test_loopback_http_jwks_uri_is_accepted(uri: str) -> None:
    AuthSettings.model_validate(one_issuer(jwks_uri=uri))


def test_issuer_needs_exactly_one_key_source() -> None:
    assert messages(one_issuer()) == ["give exactly one of jwks_uri or secret"]
    both = one_issuer(jwks_uri="https://idp/jwks", secret=SECRET)
    assert messages(both) == ["give exactly one of jwks_uri or secret"]


def test_issuer_and_audiences_are_required() -> None:
    assert "issuer is required" in messages({"jwks_uri": "https://idp/jwks"})[0]
    no_aud = {"issuer": "i", "jwks_uri": "https://idp/jwks"}
    assert "audiences" in messages(no_aud)[0]


def test_shorthand_and_issuers_together_are_refused() -> None:
    data = one_issuer(secret=SECRET)
    data["issuers"] = [{"issuer": "b", "secret": SECRET, "audiences": ["y"]}]
    assert "not both" in messages(data)[0]


def test_jwt_type_without_an_issuer_is_refused() -> None:
    assert "needs issuer" in messages({"type": "jwt"})[0]


def test_api_key_type_needs_api_keys_and_no_issuer() -> None:
    assert "needs an api_keys block" in messages({"type": "api_key"})[0]
    keys = {"keys": [{"id": "k1", "sha256": DIGEST, "consumer": "c"}]}
    data = {"type": "api_key", "api_keys": keys, **one_issuer(secret=SECRET)}
    assert "need type jwt" in messages(data)[0]


def test_unknown_keys_are_refused() -> None:
    [error] = ValidationError.errors(_error({"type": "jwt", "jwks": "x"}))
    assert error["type"] == "extra_forbidden"


def _error(data: Any) -> ValidationError:
    try:
        AuthSettings.model_validate(data)
    except ValidationError as ex:
        return ex
    raise AssertionError("no error")


@pytest.mark.parametrize("leeway", [-1, 301])
def test_leeway_is_bounded(leeway: int) -> None:
    assert messages(one_issuer(secret=SECRET, leeway=leeway))


@pytest.mark.parametrize(
    "path", ["/api/health/../orders", "/a/./b", "api/health", "/a/*/b", "/a/**/b", "/a//b"]
)
def test_exclude_paths_must_be_canonical_with_only_a_trailing_glob(path: str) -> None:
    assert messages(one_issuer(secret=SECRET, exclude_paths=[path]))


def test_exclude_paths_accepts_exact_and_trailing_glob() -> None:
    paths = ["/api/health", "/api/public/**", "/my%20files"]
    settings = AuthSettings.model_validate(one_issuer(secret=SECRET, exclude_paths=paths))
    assert settings.exclude_paths == ["/api/health", "/api/public/**", "/my files"]


@pytest.mark.parametrize("header", ["Host", "Authorization", "X-Request-Id", "x_forwarded_for"])
def test_claims_cannot_be_mapped_to_headers_the_gateway_owns(header: str) -> None:
    [message] = messages(one_issuer(secret=SECRET, claim_headers={"sub": header}))
    assert "owns" in message


def test_two_claims_cannot_share_a_header() -> None:
    mapping = {"sub": "X-User", "email": "x_user"}
    [message] = messages(one_issuer(secret=SECRET, claim_headers=mapping))
    assert "mapped from two claims" in message


def test_api_key_digest_must_be_sha256_hex() -> None:
    data = {"keys": [{"id": "k1", "sha256": "not-a-digest", "consumer": "c"}]}
    [message] = messages(data, ApiKeySettings)
    assert "64-character hex SHA-256" in message


def test_api_key_block_needs_keys_or_a_file() -> None:
    assert messages({}, ApiKeySettings) == ["give keys, a file, or both"]


def test_api_key_digest_is_normalized_to_lowercase() -> None:
    data = {"keys": [{"id": "k1", "sha256": "A" * 64, "consumer": "c"}]}
    assert ApiKeySettings.model_validate(data).keys[0].sha256 == "a" * 64


@pytest.mark.parametrize("text", ["required", "optional", "none"])
def test_route_policy_accepts_plain_strings(text: str) -> None:
    assert RoutePolicy.model_validate(text).effective_mode == text


def test_route_policy_defaults_to_required() -> None:
    policy = RoutePolicy.model_validate({})
    assert policy.mode is None and policy.effective_mode == "required"


def test_route_policy_roles_and_scopes() -> None:
    policy = RoutePolicy.model_validate({"roles": ["admin"], "scopes": ["orders:read"]})
    assert (policy.roles, policy.scopes) == (["admin"], ["orders:read"])


@pytest.mark.parametrize("mode", ["optional", "none"])
def test_roles_need_mode_required(mode: str) -> None:
    assert messages({"mode": mode, "roles": ["admin"]}, RoutePolicy) == [
        "roles and scopes need mode: required or shadow"
    ]


def test_route_policy_refuses_unknown_modes() -> None:
    assert messages("sometimes", RoutePolicy)


@pytest.mark.parametrize("header", ["X-Key: evil\r\n", "X Key", "", "X-API-Key\n"])
def test_api_key_header_must_be_a_header_name(header: str) -> None:
    entry = {"id": "k1", "sha256": DIGEST, "consumer": "c"}
    [message] = messages({"header": header, "keys": [entry]}, ApiKeySettings)
    assert "not a valid header name" in message


@pytest.mark.parametrize("key_id", ["a b", "k1\r\n", "", "x" * 129])
def test_api_key_id_is_a_plain_name(key_id: str) -> None:
    entry = {"id": key_id, "sha256": DIGEST, "consumer": "c"}
    assert messages({"keys": [entry]}, ApiKeySettings)
