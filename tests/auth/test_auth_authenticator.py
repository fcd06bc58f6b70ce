"""The authenticate stage: credentials from headers, route policies, excluded paths, audit."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gw.auth import (
    Authenticator,
    AuthSettings,
    Forbidden,
    InvalidToken,
    RoutePolicy,
    Unauthorized,
    hash_api_key,
)
from gw.auth.authenticator import _single
from gw.core.headers import canonical_name
from gw.core.paths import canonicalize
from tests.auth.fakes import FakeClock
from tests.support.tokens import AUDIENCE, ISSUER, SigningKey, bearer, claims, jwks

API_KEY = "gwk_test_0123456789abcdef"
REQUIRED = RoutePolicy()
OPTIONAL = RoutePolicy(mode="optional")
NONE = RoutePolicy(mode="none")


@pytest.fixture
def auth(rsa: SigningKey, clock: FakeClock) -> Callable[..., Authenticator]:
    body = json.dumps(jwks(rsa)).encode()

    def make(**overrides: Any) -> Authenticator:
        data: dict[str, Any] = {
            "type": "jwt",
            "issuer": ISSUER,
            "jwks_uri": "https://auth.example.com/jwks",
            "audiences": [AUDIENCE],
            "exclude_paths": ["/api/health", "/api/public/**"],
            **overrides,
        }
        if data["type"] == "api_key":
            for key in ("issuer", "jwks_uri", "audiences"):
                data.pop(key)
        settings = AuthSettings.model_validate(data)
        return Authenticator(settings, fetcher=lambda uri, timeout: body, clock=clock)

    return make


def api_keys(role: str | None = "partner") -> dict[str, Any]:
    entry = {"id": "mobile", "sha256": hash_api_key(API_KEY), "consumer": "app_mobile"}
    return {"keys": [entry | ({"role": role} if role else {})]}


def rejected(authenticator: Authenticator, headers: list[tuple[str, str]], **kw: Any) -> Any:
    with pytest.raises((Unauthorized, Forbidden)) as info:
        authenticator.authenticate("/api/orders", headers, kw.pop("policy", REQUIRED), **kw)
    return info.value


def test_valid_token_gives_identity_and_seed_headers(auth: Any, rsa: SigningKey) -> None:
    identity = auth().authenticate("/api/orders/ord_x7k9", bearer(rsa.mint(claims())))
    assert identity.method == "jwt" and identity.key_id == "rsa-1"
    assert identity.headers() == [
        ("X-User-Id", "usr_8a3f"),
        ("X-User-Role", "customer"),
        ("X-User-Issuer", ISSUER),
    ]


def test_no_credential_is_401_with_a_bare_challenge(auth: Any) -> None:
    error = rejected(auth(), [("Accept", "*/*")])
    assert (error.status, error.code) == (401, "unauthorized")
    assert error.headers == {"WWW-Authenticate": 'Bearer realm="gw"'}


def test_bad_token_is_401_invalid_token_with_a_description(auth: Any) -> None:
    error = rejected(auth(), bearer("not-a-jwt"))
    assert (error.status, error.code) == (401, "invalid_token")
    assert error.headers["WWW-Authenticate"] == (
        'Bearer realm="gw", error="invalid_token", error_description="the token is malformed"'
    )
    assert error.to_dict("req_1") == {
        "error": "invalid_token",
        "message": "the token is malformed",
        "request_id": "req_1",
    }


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_bearer_scheme_is_case_insensitive(auth: Any, rsa: SigningKey, scheme: str) -> None:
    headers = [("authorization", f"{scheme} {rsa.mint(claims())}")]
    assert auth().authenticate("/api/orders", headers) is not None


@pytest.mark.parametrize(
    "value", ["Basic dXNlcjpwdw==", "Bearer", "Bearer ", "Token abc", "Bearer a b", "abc"]
)
def test_only_bearer_tokens_are_accepted(auth: Any, value: str) -> None:
    error = rejected(auth(), [("Authorization", value)])
    assert error.code == "invalid_token" and error.reason == "not_bearer"


def test_two_authorization_headers_are_rejected(auth: Any, rsa: SigningKey) -> None:
    token = rsa.mint(claims())
    error = rejected(auth(), [("Authorization", f"Bearer {token}")] * 2)
    assert (error.status, error.reason) == (401, "duplicate_credentials")


def test_comma_joined_authorization_is_rejected(auth: Any, rsa: SigningKey) -> None:
    """gunicorn joins repeated headers with ', ': that is two credentials, not one."""
    token = rsa.mint(claims())
    error = rejected(auth(), [("Authorization", f"Bearer {token}, Bearer {token}")])
    assert (error.status, error.reason) == (401, "duplicate_credentials")


def test_optional_route_without_credential_is_anonymous(auth: Any) -> None:
    assert auth().authenticate("/api/orders", [], OPTIONAL) is None


def test_optional_route_still_rejects_a_bad_token(auth: Any) -> None:
    assert rejected(auth(), bearer("garbage"), policy=OPTIONAL).status == 401


def test_optional_route_with_a_good_token_identifies(auth: Any, rsa: SigningKey) -> None:
    assert auth().authenticate("/api/orders", bearer(rsa.mint(claims())), OPTIONAL)


def test_mode_none_never_looks_at_credentials(auth: Any) -> None:
    assert auth().authenticate("/api/orders", bearer("garbage"), NONE) is None


@pytest.mark.parametrize(
    "path", ["/api/health", "/api/public", "/api/public/", "/api/public/docs/v1"]
)
def test_excluded_paths_never_look_at_credentials(auth: Any, path: str) -> None:
    assert auth().authenticate(path, bearer("garbage")) is None


@pytest.mark.parametrize(
    "raw", ["/api/health/../orders", "/api/public/../orders", "/api/health/", "/api/publicity"]
)
def test_paths_that_only_look_excluded_are_checked(auth: Any, raw: str) -> None:
    with pytest.raises(Unauthorized):
        auth().authenticate(canonicalize(raw), [])


def test_header_names_are_the_identity_headers(auth: Any) -> None:
    assert auth().header_names() == {"x-user-id", "x-user-role", "x-user-issuer"}
    custom = auth(
        claim_headers={"sub": "X-Consumer", "email": "X-User-Email"}, issuer_header="X-Idp"
    )
    assert custom.header_names() == {"x-consumer", "x-user-email", "x-idp"}


def test_claim_headers_follow_the_mapping(auth: Any, rsa: SigningKey) -> None:
    mapping = {"sub": "X-Consumer", "tenant": "X-Tenant"}
    identity = auth(claim_headers=mapping).authenticate(
        "/api/orders", bearer(rsa.mint(claims(tenant=42)))
    )
    assert identity.headers() == [
        ("X-Consumer", "usr_8a3f"),
        ("X-Tenant", "42"),
        ("X-User-Issuer", ISSUER),
    ]


@pytest.mark.parametrize("role", ["customer\r\nX-User-Role: admin", "admin\x00", "Ω-admin"])
def test_claim_that_cannot_be_a_header_rejects_the_token(
    auth: Any, rsa: SigningKey, role: str
) -> None:
    error = rejected(auth(), bearer(rsa.mint(claims(role=role))))
    assert (error.status, error.code, error.reason) == (401, "invalid_token", "unsafe_claim")
    assert error.detail["claim"] == "role"


def test_token_without_subject_is_rejected(auth: Any, rsa: SigningKey) -> None:
    body = claims()
    del body["sub"]
    error = rejected(auth(), bearer(rsa.mint(body)))
    assert (error.code, error.reason) == ("invalid_token", "missing_claim")


# -- roles and scopes ----------------------------------------------------------------------


def test_role_policy_admits_any_listed_role(auth: Any, rsa: SigningKey) -> None:
    policy = RoutePolicy(roles=["admin", "customer"])
    assert auth().authenticate("/api/orders", bearer(rsa.mint(claims())), policy)


def test_missing_role_is_403(auth: Any, rsa: SigningKey) -> None:
    error = rejected(auth(), bearer(rsa.mint(claims())), policy=RoutePolicy(roles=["admin"]))
    assert (error.status, error.code, error.reason) == (403, "forbidden", "insufficient_role")


@pytest.mark.parametrize(
    ("policy", "reason"),
    [
        (RoutePolicy(scopes=["orders:write"]), "insufficient_scope"),
        (RoutePolicy(issuers=["api_key"]), "issuer_not_accepted"),
        # validation refuses an empty mapping; one made without it still accepts no issuer
        (RoutePolicy.model_construct(roles={}), "issuer_not_accepted"),
    ],
)
def test_a_route_that_asks_anything_of_the_caller_is_checked(
    auth: Any, rsa: SigningKey, policy: RoutePolicy, reason: str
) -> None:
    error = rejected(auth(), bearer(rsa.mint(claims())), policy=policy)
    assert (error.status, error.reason) == (403, reason)
    assert 'error="insufficient_scope"' in error.headers["WWW-Authenticate"]


def test_scopes_must_all_be_granted(auth: Any, rsa: SigningKey) -> None:
    policy = RoutePolicy(scopes=["orders:read", "orders:write"])
    granted = rsa.mint(claims(scope="profile orders:read orders:write"))
    assert auth().authenticate("/api/orders", bearer(granted), policy)
    error = rejected(auth(), bearer(rsa.mint(claims(scp=["orders:read"]))), policy=policy)
    assert (error.status, error.code) == (403, "forbidden")
    assert error.headers["WWW-Authenticate"] == (
        'Bearer realm="gw", error="insufficient_scope", error_description="the credential '
        'lacks a scope this route requires", scope="orders:read orders:write"'
    )


# -- API keys ------------------------------------------------------------------------------


def test_api_key_maps_to_consumer_and_role(auth: Any) -> None:
    authenticator = auth(type="api_key", api_keys=api_keys())
    identity = authenticator.authenticate("/api/orders", [("X-Api-Key", API_KEY)])
    assert (identity.method, identity.subject, identity.key_id) == (
        "api_key",
        "app_mobile",
        "mobile",
    )
    assert identity.headers() == [("X-User-Id", "app_mobile"), ("X-User-Role", "partner")]


def test_api_key_header_is_configurable(auth: Any) -> None:
    authenticator = auth(type="api_key", api_keys={**api_keys(), "header": "X-Partner-Key"})
    assert authenticator.authenticate("/x", [("X-Partner-Key", API_KEY)]) is not None
    with pytest.raises(Unauthorized):
        authenticator.authenticate("/x", [("X-API-Key", API_KEY)])


def test_unknown_api_key_is_401(auth: Any) -> None:
    error = rejected(auth(type="api_key", api_keys=api_keys()), [("X-API-Key", "guess")])
    assert (error.status, error.code, error.reason) == (401, "invalid_token", "unknown_api_key")


def test_two_api_keys_are_rejected(auth: Any) -> None:
    authenticator = auth(type="api_key", api_keys=api_keys())
    error = rejected(authenticator, [("X-API-Key", f"{API_KEY}, other")])
    assert error.reason == "duplicate_credentials"


def test_api_key_only_gateway_ignores_authorization(auth: Any) -> None:
    authenticator = auth(type="api_key", api_keys=api_keys())
    headers = [("Authorization", "Basic dXNlcjpwdw=="), ("X-API-Key", API_KEY)]
    assert authenticator.authenticate("/x", headers) is not None


def test_either_credential_works_but_not_both(auth: Any, rsa: SigningKey) -> None:
    authenticator = auth(type="jwt_or_api_key", api_keys=api_keys())
    token = bearer(rsa.mint(claims()))
    assert authenticator.authenticate("/x", token).method == "jwt"
    assert authenticator.authenticate("/x", [("X-API-Key", API_KEY)]).method == "api_key"
    error = rejected(authenticator, [*token, ("X-API-Key", API_KEY)])
    assert (error.status, error.reason) == (401, "ambiguous_credentials")
    missing = rejected(authenticator, [])
    assert missing.message == "authentication is required: send a bearer token or an API key"


def test_api_key_identity_has_no_scopes(auth: Any) -> None:
    authenticator = auth(type="api_key", api_keys=api_keys())
    error = rejected(authenticator, [("X-API-Key", API_KEY)], policy=RoutePolicy(scopes=["a"]))
    assert error.status == 403
    assert authenticator.authenticate(
        "/x", [("X-API-Key", API_KEY)], RoutePolicy(roles=["partner"])
    )


# -- audit ---------------------------------------------------------------------------------


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "gw.audit"]


def test_each_failure_logs_one_audit_line_without_the_token(
    auth: Any, rsa: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    token = rsa.mint(claims(aud="someone-else"))
    with caplog.at_level(logging.INFO, logger="gw.audit"):
        rejected(auth(), bearer(token), client="203.0.113.9", request_id="req_42")
    [line] = audit_lines(caplog)
    assert line == {
        "event": "auth_failure",
        "status": 401,
        "code": "invalid_token",
        "reason": "wrong_audience",
        "path": "/api/orders",
        "client": "203.0.113.9",
        "request_id": "req_42",
        "alg": "RS256",
        "kid": "rsa-1",
        "iss": ISSUER,
    }
    assert token not in caplog.text and token.split(".")[2] not in caplog.text


def test_api_key_never_appears_in_the_audit_log(
    auth: Any, caplog: pytest.LogCaptureFixture
) -> None:
    authenticator = auth(type="api_key", api_keys=api_keys())
    with caplog.at_level(logging.INFO, logger="gw.audit"):
        rejected(authenticator, [("X-API-Key", "gwk_wrong_key_secret")])
        rejected(authenticator, [("X-API-Key", API_KEY)], policy=RoutePolicy(roles=["admin"]))
    assert [line["reason"] for line in audit_lines(caplog)] == [
        "unknown_api_key",
        "insufficient_role",
    ]
    assert "gwk_wrong_key_secret" not in caplog.text and API_KEY not in caplog.text


def test_hostile_kid_is_escaped_in_the_audit_line(
    auth: Any, rsa: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="gw.audit"):
        rejected(auth(), bearer(rsa.mint(claims(), kid='x"\r\n{"forged": true}')))
    [record] = [r for r in caplog.records if r.name == "gw.audit"]
    assert "\n" not in record.getMessage() and "forged" not in json.loads(record.getMessage())


def test_success_logs_nothing(auth: Any, rsa: SigningKey, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="gw.audit"):
        auth().authenticate("/api/orders", bearer(rsa.mint(claims())))
        auth().authenticate("/api/health", [])
    assert audit_lines(caplog) == []


def test_no_network_at_construction(rsa: SigningKey, clock: FakeClock) -> None:
    calls: list[str] = []

    def fetcher(uri: str, timeout: float) -> bytes:
        calls.append(uri)
        return b""

    settings = AuthSettings.model_validate(
        {"issuer": ISSUER, "jwks_uri": "https://idp/jwks", "audiences": [AUDIENCE]}
    )
    Authenticator(settings, fetcher=fetcher, clock=clock)
    assert calls == []


def test_errors_are_client_errors_with_stable_codes() -> None:
    from gw.errors import ClientError

    assert issubclass(Unauthorized, ClientError) and issubclass(Forbidden, ClientError)
    assert issubclass(InvalidToken, Unauthorized)
    assert (Unauthorized.code, InvalidToken.code, Forbidden.code) == (
        "unauthorized",
        "invalid_token",
        "forbidden",
    )


@settings(max_examples=500)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Authorization", "AUTHORIZATION", "x-api-key", "X_Api.Key"])
            | st.text(alphabet="aAkKiIxX-_.\u212a\u0130\u0131\u017f", max_size=14),
            st.sampled_from(["k", "a, b"]),
        ),
        max_size=4,
    ),
    st.sampled_from(["authorization", "x-api-key"]),
)
def test_one_credential_field_is_found_in_every_spelling_of_its_name(
    headers: list[tuple[str, str]], name: str
) -> None:
    """``_single`` reads the fields whose comparison form is ``name`` (Kelvin sign and dotted
    I included), and refuses two of them or a joined value."""
    values = [v for n, v in headers if canonical_name(n) == name]
    if len(values) > 1 or (values and "," in values[0]):
        with pytest.raises(InvalidToken):
            _single(headers, name, "the field")
    else:
        assert _single(headers, name, "the field") == (values[0] if values else None)
