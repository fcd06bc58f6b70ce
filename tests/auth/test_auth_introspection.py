"""Opaque tokens checked with a real introspection endpoint on 127.0.0.1 (RFC 7662).

The answer cache's clock is a fake one (``negative_ttl`` passes in no time); ``exp`` is wall
clock, as it is for JWTs. The provider counts its calls, so "cached" means "not asked".
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gw.auth import Authenticator, AuthSettings, InvalidToken, RoutePolicy
from gw.auth.errors import IntrospectionUnavailable
from gw.config.load import parse_config
from gw.errors import ConfigError
from tests.auth.fakes import FakeClock
from tests.support.idp_server import CLIENT_ID, CLIENT_SECRET, IdpServer, start_idp_server
from tests.support.tokens import AUDIENCE, SECRET, SigningKey, bearer, claims, mint_hs256

OPAQUE = "2YotnFZFEjr1zCsicMWpAA"  # RFC 6749's example access token
SECRET_ENV = "GW_TEST_INTROSPECTION_SECRET"
MAIN = "https://login.example.com"

Make = Callable[..., Authenticator]


@pytest.fixture
def idp(rsa: SigningKey) -> Iterator[IdpServer]:
    server = start_idp_server(rsa)
    yield server
    server.close()


@pytest.fixture
def make(idp: IdpServer, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> Make:
    """An authenticator with a JWT issuer ``main`` and the introspecting issuer ``opaque``."""
    monkeypatch.setenv(SECRET_ENV, CLIENT_SECRET)

    def build(audiences: list[str] | None = None, **introspection: Any) -> Authenticator:
        block = {
            "endpoint": idp.introspect_url,
            "client_id": CLIENT_ID,
            "client_secret_env": SECRET_ENV,
            "timeout": 0.5,
            "cache": {"negative_ttl": 5, "max_ttl": 300},
            **introspection,
        }
        opaque: dict[str, Any] = {"name": "opaque", "issuer": idp.issuer, "introspection": block}
        if audiences is not None:
            opaque["audiences"] = audiences
        settings = AuthSettings.model_validate(
            {
                "type": "jwt",
                "issuers": [
                    {"name": "main", "issuer": MAIN, "secret": SECRET, "audiences": [AUDIENCE]},
                    opaque,
                ],
                "claim_headers": {"sub": "X-User-Id", "client_id": "X-Client-Id"},
                "leeway": 0,
            }
        )
        return Authenticator(settings, clock=clock)

    return build


def refusal(authenticator: Authenticator, token: str = OPAQUE, **kw: Any) -> InvalidToken:
    with pytest.raises(InvalidToken) as info:
        authenticator.authenticate("/api", bearer(token), **kw)
    return info.value


def unavailable(authenticator: Authenticator, token: str = OPAQUE) -> IntrospectionUnavailable:
    with pytest.raises(IntrospectionUnavailable) as info:
        authenticator.authenticate("/api", bearer(token))
    return info.value


def test_an_active_token_becomes_the_caller_with_the_usual_headers(
    make: Make, idp: IdpServer
) -> None:
    idp.activate(OPAQUE, sub="alice", scope="orders:read orders:write", client_id="app-7")
    identity = make().authenticate("/api", bearer(OPAQUE))
    assert identity is not None
    assert identity.subject == "alice" and identity.issuer == idp.issuer
    assert identity.scopes == {"orders:read", "orders:write"}
    assert identity.headers() == [
        ("X-User-Id", "alice"),
        ("X-Client-Id", "app-7"),
        ("X-User-Issuer", idp.issuer),
    ]
    assert identity.principal == f'["jwt","{idp.issuer}","alice"]'
    assert idp.forms == [{"token": OPAQUE, "token_type_hint": "access_token"}]
    # RFC 6749 2.3.1: id and secret are form-encoded ("!" is %21) before Basic encoding.
    assert CLIENT_SECRET.endswith("!")
    basic = base64.b64encode(b"gw:" + CLIENT_SECRET[:-1].encode() + b"%21").decode()
    assert idp.authorizations == ["Basic " + basic]


def test_client_secret_post_sends_the_credentials_in_the_form(make: Make, idp: IdpServer) -> None:
    idp.activate(OPAQUE, sub="alice")
    assert make(auth_method="client_secret_post").authenticate("/api", bearer(OPAQUE))
    assert idp.forms[0]["client_id"] == CLIENT_ID
    assert idp.forms[0]["client_secret"] == CLIENT_SECRET
    assert idp.authorizations == [None]


def test_an_inactive_token_is_401_like_a_bad_jwt(make: Make) -> None:
    ex = refusal(make())
    assert (ex.status, ex.code, ex.reason) == (401, "invalid_token", "inactive")
    assert ex.headers["WWW-Authenticate"].startswith('Bearer realm="gw", error="invalid_token"')
    assert not ex.signed  # counted by the failure throttle, like a guessed token


def test_one_call_answers_repeated_requests(make: Make, idp: IdpServer) -> None:
    idp.activate(OPAQUE, sub="alice", exp=int(time.time()) + 600)
    authenticator = make()
    for _ in range(5):
        assert authenticator.authenticate("/api", bearer(OPAQUE))
    assert idp.introspections == 1


def test_an_inactive_answer_is_reused_only_for_negative_ttl(
    make: Make, idp: IdpServer, clock: FakeClock
) -> None:
    authenticator = make()
    assert refusal(authenticator).reason == "inactive"
    assert refusal(authenticator).detail["cached"] is True
    assert idp.introspections == 1
    idp.activate(OPAQUE, sub="alice")  # the token became valid (or was a typo fixed)
    clock.advance(4.9)
    assert refusal(authenticator).reason == "inactive"
    clock.advance(0.2)
    assert authenticator.authenticate("/api", bearer(OPAQUE)) is not None
    assert idp.introspections == 2


def test_an_active_answer_is_not_reused_past_max_ttl(
    make: Make, idp: IdpServer, clock: FakeClock
) -> None:
    idp.activate(OPAQUE, sub="alice")
    authenticator = make()
    assert authenticator.authenticate("/api", bearer(OPAQUE))
    idp.revoke(OPAQUE)
    clock.advance(299)
    assert authenticator.authenticate("/api", bearer(OPAQUE))  # still within max_ttl
    clock.advance(2)
    assert refusal(authenticator).reason == "inactive"
    assert idp.introspections == 2


def test_exp_is_checked_by_the_gateway_and_bounds_the_cache(make: Make, idp: IdpServer) -> None:
    idp.activate("stale-but-active", sub="alice", exp=int(time.time()) - 60)
    authenticator = make()
    assert refusal(authenticator, "stale-but-active").reason == "expired"
    idp.activate(OPAQUE, sub="alice", exp=time.time() + 1.0)
    assert authenticator.authenticate("/api", bearer(OPAQUE))
    time.sleep(1.1)
    # The cached answer dies with the token: asked again, and the stale "active" is refused.
    assert refusal(authenticator).reason == "expired"
    assert idp.introspections == 3


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ({"sub": "alice", "nbf": 4102444800}, "not_yet_valid"),
        ({"sub": "alice", "exp": "4102444800"}, "invalid_claim"),
        ({"sub": "alice", "iss": MAIN}, "wrong_issuer"),
        ({"sub": "alice", "aud": "another-api"}, "wrong_audience"),
        ({"sub": "alice"}, "wrong_audience"),
        ({"client_id": "app-7", "aud": AUDIENCE}, "missing_claim"),
        ({"sub": "alice\r\nX-Admin: 1", "aud": AUDIENCE}, "unsafe_claim"),
    ],
)
def test_what_an_active_answer_says_is_checked(
    make: Make, idp: IdpServer, members: dict[str, Any], reason: str
) -> None:
    idp.activate(OPAQUE, **members)
    ex = refusal(make(audiences=[AUDIENCE]))
    assert ex.reason == reason and ex.status == 401
    assert ex.signed  # the provider issued it: not a guess


def test_subject_claim_names_client_credentials_callers(make: Make, idp: IdpServer) -> None:
    idp.activate(OPAQUE, client_id="batch-job", scope="reports")
    identity = make(subject_claim="client_id").authenticate("/api", bearer(OPAQUE))
    assert identity is not None and identity.subject == "batch-job"


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("error", "introspection_status"),
        ("garbage", "introspection_malformed"),
        ("active_string", "introspection_malformed"),
        ("hang", "introspection_timeout"),
    ],
)
def test_a_provider_without_a_usable_answer_is_503_never_active(
    make: Make, idp: IdpServer, mode: str, reason: str
) -> None:
    idp.activate(OPAQUE, sub="alice")
    idp.mode = mode
    ex = unavailable(make(timeout=0.3))
    assert (ex.status, ex.code, ex.reason) == (503, "introspection_unavailable", reason)
    assert ex.headers["Retry-After"] == "2"


def test_provider_down_is_503_and_not_remembered(make: Make, idp: IdpServer) -> None:
    idp.activate(OPAQUE, sub="alice")
    authenticator = make()
    idp.go_down()
    assert unavailable(authenticator).reason == "introspection_unreachable"
    idp.come_back()
    assert authenticator.authenticate("/api", bearer(OPAQUE)) is not None


def test_a_wrong_client_secret_is_503_not_the_callers_fault(
    make: Make, idp: IdpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    idp.activate(OPAQUE, sub="alice")
    monkeypatch.setenv(SECRET_ENV, "not-the-secret")
    ex = unavailable(make())
    assert ex.reason == "introspection_status" and ex.detail["status"] == 401
    assert idp.introspections == 1


def test_a_jwt_is_never_sent_to_introspection(make: Make, idp: IdpServer) -> None:
    good = mint_hs256(SECRET, claims(iss=MAIN))
    authenticator = make()
    identity = authenticator.authenticate("/api", bearer(good))
    assert identity is not None and identity.method == "jwt"
    broken = good[:-4] + "AAAA"
    assert refusal(authenticator, broken).reason == "bad_signature"
    assert refusal(authenticator, "a.b.c").reason == "malformed"
    assert idp.introspections == 0


def test_a_jwt_only_route_never_asks_the_provider(make: Make, idp: IdpServer) -> None:
    idp.activate(OPAQUE, sub="alice")
    authenticator = make()
    ex = refusal(authenticator, policy=RoutePolicy(issuers=["main"]))
    assert ex.reason == "opaque_not_accepted" and ex.status == 401
    assert idp.introspections == 0
    assert authenticator.authenticate("/api", bearer(OPAQUE), RoutePolicy(issuers=["opaque"]))
    assert idp.introspections == 1


def test_a_token_outside_the_bearer_alphabet_is_not_sent(make: Make, idp: IdpServer) -> None:
    assert refusal(make(), "abc<def>").reason == "malformed"
    assert idp.introspections == 0


def test_the_client_secret_must_be_given_and_is_named_where_missing(
    idp: IdpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    config = {
        "upstreams": {"svc": {"targets": ["http://127.0.0.1:9"]}},
        "auth": {
            "issuers": [
                {
                    "issuer": idp.issuer,
                    "introspection": {
                        "endpoint": idp.introspect_url,
                        "client_id": CLIENT_ID,
                        "client_secret_env": SECRET_ENV,
                    },
                }
            ]
        },
        "routes": [{"path": "/**", "upstream": "svc"}],
    }
    with pytest.raises(ConfigError) as info:
        parse_config(config, environ={})
    assert (
        f"auth: issuers[0].introspection.client_secret_env: environment variable {SECRET_ENV} "
        "is not set" in info.value.problems
    )


@pytest.mark.parametrize(
    ("introspection", "problem"),
    [
        ({"client_secret_env": "A", "client_secret_file": "/f"}, "exactly one of client_secret"),
        ({}, "exactly one of client_secret"),
        ({"client_secret_env": "A", "endpoint": "http://idp.example/i"}, "only on loopback"),
        ({"client_secret_env": "A", "client_secret": "inline"}, "Extra inputs"),
    ],
)
def test_introspection_settings_are_refused_with_a_reason(
    introspection: dict[str, Any], problem: str
) -> None:
    block = {"endpoint": "https://idp.example/i", "client_id": "gw", **introspection}
    with pytest.raises(ValueError, match=problem):
        AuthSettings.model_validate(
            {"issuers": [{"issuer": "https://idp.example", "introspection": block}]}
        )


def test_the_client_secret_may_come_from_a_file(
    idp: IdpServer, tmp_path: Any, clock: FakeClock
) -> None:
    path = tmp_path / "secret"
    path.write_text(CLIENT_SECRET + "\n")
    idp.activate(OPAQUE, sub="alice")
    block = {
        "endpoint": idp.introspect_url,
        "client_id": CLIENT_ID,
        "client_secret_file": str(path),
    }
    settings = AuthSettings.model_validate(
        {"issuers": [{"issuer": idp.issuer, "introspection": block}]}
    )
    authenticator = Authenticator(settings, clock=clock)
    assert authenticator.authenticate("/api", bearer(OPAQUE))
    # With no issuer that verifies JWTs, a JWT is refused without asking the provider.
    assert refusal(authenticator, mint_hs256(SECRET, claims(iss=idp.issuer))).reason == (
        "unknown_issuer"
    )
    assert idp.introspections == 1


def test_concurrent_first_requests_for_one_token_cost_one_call(make: Make, idp: IdpServer) -> None:
    idp.activate(OPAQUE, sub="alice")
    idp.delay = 0.2
    authenticator = make()
    subjects: list[str] = []

    def one() -> None:
        identity = authenticator.authenticate("/api", bearer(OPAQUE))
        subjects.append(identity.subject if identity else "")

    threads = [threading.Thread(target=one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert subjects == ["alice"] * 6
    assert idp.introspections == 1


def test_requests_waiting_on_a_failed_call_ask_for_themselves(make: Make, idp: IdpServer) -> None:
    idp.mode = "error"
    idp.delay = 0.2
    authenticator = make()
    codes: list[str] = []

    def one() -> None:
        try:
            authenticator.authenticate("/api", bearer(OPAQUE))
        except IntrospectionUnavailable as ex:
            codes.append(ex.code)

    threads = [threading.Thread(target=one) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert codes == ["introspection_unavailable"] * 3
    assert idp.introspections == 3  # a failure is never shared as an answer
