"""Several identity providers: a caller is the pair (issuer, subject), the upstream is told the
issuer, and a route may accept only some issuers and ask for roles per issuer."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from gw.auth import (
    Authenticator,
    AuthSettings,
    Forbidden,
    Identity,
    IssuerNotAccepted,
    RoutePolicy,
    hash_api_key,
)
from gw.auth.identity import build_identity
from gw.auth.settings import DEFAULT_CLAIM_HEADERS
from tests.support.tokens import AUDIENCE, bearer, claims, mint_hs256

MAIN = "https://login.example.com"
PARTNER = "https://partner.example.net"
SECRETS = {MAIN: "main-secret-" + "m" * 32, PARTNER: "partner-secret-" + "p" * 32}
API_KEY = "gwk_issuers_0123456789abcdef"


def settings(**extra: Any) -> AuthSettings:
    data: dict[str, Any] = {
        "type": "jwt_or_api_key",
        "issuers": [
            {"name": "main", "issuer": MAIN, "secret": SECRETS[MAIN], "audiences": [AUDIENCE]},
            {"issuer": PARTNER, "secret": SECRETS[PARTNER], "audiences": [AUDIENCE]},
        ],
        "api_keys": {"keys": [{"id": "k1", "sha256": hash_api_key(API_KEY), "consumer": "alice"}]},
        **extra,
    }
    return AuthSettings.model_validate(data)


def authenticator(**extra: Any) -> Authenticator:
    return Authenticator(settings(**extra))


def token(issuer: str, sub: str = "alice", role: str | None = "customer") -> list[tuple[str, str]]:
    return bearer(mint_hs256(SECRETS[issuer], claims(iss=issuer, sub=sub, role=role)))


def who(issuer: str, policy: RoutePolicy | None = None, **kw: Any) -> Identity:
    found = authenticator().authenticate("/x", token(issuer, **kw), policy or RoutePolicy())
    assert found is not None
    return found


def refused(headers: list[tuple[str, str]], policy: RoutePolicy) -> Forbidden:
    with pytest.raises(Forbidden) as info:
        authenticator().authenticate("/x", headers, policy)
    return info.value


# -- who the caller is ------------------------------------------------------------------------


def test_two_alices_are_two_principals() -> None:
    main, partner = who(MAIN), who(PARTNER)
    assert main.subject == partner.subject == "alice"
    assert main.principal != partner.principal
    assert json.loads(main.principal) == ["jwt", MAIN, "alice"]
    assert json.loads(partner.principal) == ["jwt", PARTNER, "alice"]


def test_api_key_callers_have_their_own_namespace() -> None:
    by_key = authenticator().authenticate("/x", [("X-API-Key", API_KEY)])
    assert by_key is not None and by_key.subject == "alice"
    assert json.loads(by_key.principal) == ["api_key", "alice"]
    assert by_key.principal not in (who(MAIN).principal, who(PARTNER).principal)
    assert "x-user-issuer" not in {name.lower() for name, _ in by_key.headers()}


text = st.text(min_size=1, max_size=12)


@given(st.tuples(text, text), st.tuples(text, text))
def test_principal_is_equal_only_for_the_same_issuer_and_subject(
    first: tuple[str, str], second: tuple[str, str]
) -> None:
    """No (issuer, subject) pair spells another one's principal, whatever they contain."""

    def principal(issuer: str, subject: str) -> str:
        return Identity(subject, None, {}, "jwt", None, issuer).principal

    assert (principal(*first) == principal(*second)) == (first == second)


def test_upstream_is_told_the_issuer() -> None:
    assert ("X-User-Issuer", PARTNER) in who(PARTNER).headers()
    custom = authenticator(issuer_header="X-Idp").authenticate("/x", token(MAIN))
    assert custom is not None and ("X-Idp", MAIN) in custom.headers()
    assert authenticator().header_names() >= {"x-user-id", "x-user-issuer"}


def test_issuer_header_is_added_by_build_identity_only_when_asked() -> None:
    plain = build_identity(
        {"sub": "a"}, method="jwt", key_id=None, claim_headers=DEFAULT_CLAIM_HEADERS, issuer=MAIN
    )
    assert plain.headers() == [("X-User-Id", "a")]


# -- what a route accepts ------------------------------------------------------------------------


def test_route_accepts_only_the_issuers_it_lists() -> None:
    policy = RoutePolicy(issuers=["main"])
    assert who(MAIN, policy).issuer == MAIN
    error = refused(token(PARTNER), policy)
    assert isinstance(error, IssuerNotAccepted)
    assert (error.status, error.code, error.reason) == (403, "issuer_not_accepted", error.code)
    assert error.to_dict()["error"] == "issuer_not_accepted"
    assert refused([("X-API-Key", API_KEY)], policy).code == "issuer_not_accepted"


def test_issuer_without_a_name_is_named_by_its_issuer_value() -> None:
    assert who(PARTNER, RoutePolicy(issuers=[PARTNER])).issuer == PARTNER
    assert refused(token(MAIN), RoutePolicy(issuers=[PARTNER])).code == "issuer_not_accepted"


def test_api_key_is_a_source_a_route_may_accept() -> None:
    policy = RoutePolicy(issuers=["api_key"])
    found = authenticator().authenticate("/x", [("X-API-Key", API_KEY)], policy)
    assert found is not None and found.method == "api_key"
    assert refused(token(MAIN), policy).code == "issuer_not_accepted"


def test_roles_mapping_asks_each_issuer_for_its_own_roles() -> None:
    policy = RoutePolicy(roles={"main": ["admin"], PARTNER: ["partner-admin"]})
    assert who(MAIN, policy, role="admin")
    assert who(PARTNER, policy, role="partner-admin")
    assert refused(token(PARTNER, role="admin"), policy).reason == "insufficient_role"
    assert refused(token(MAIN, role="partner-admin"), policy).code == "forbidden"


def test_roles_mapping_without_issuers_refuses_an_issuer_it_does_not_name() -> None:
    """Never let an issuer in without a role just because the mapping forgot it."""
    policy = RoutePolicy(roles={"main": ["admin"]})
    assert refused(token(PARTNER, role="admin"), policy).code == "issuer_not_accepted"


def test_listed_issuer_missing_from_the_roles_mapping_needs_no_role() -> None:
    policy = RoutePolicy(issuers=["main", PARTNER], roles={"main": ["admin"]})
    assert who(PARTNER, policy, role="anything")
    assert refused(token(MAIN, role="customer"), policy).reason == "insufficient_role"


def test_plain_role_list_keeps_its_meaning_for_every_issuer() -> None:
    policy = RoutePolicy(roles=["admin"])
    assert who(MAIN, policy, role="admin") and who(PARTNER, policy, role="admin")
    assert refused(token(PARTNER), policy).reason == "insufficient_role"


def test_optional_route_may_restrict_issuers() -> None:
    policy = RoutePolicy(mode="optional", issuers=["main"])
    assert authenticator().authenticate("/x", [], policy) is None
    assert refused(token(PARTNER), policy).code == "issuer_not_accepted"


# -- settings -----------------------------------------------------------------------------------


def messages(data: Any, model: type[Any] = AuthSettings) -> list[str]:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return [str(e["msg"]).removeprefix("Value error, ") for e in info.value.errors()]


def issuer(name: str | None, iss: str) -> dict[str, Any]:
    entry = {"issuer": iss, "secret": "s" * 32, "audiences": ["api"]}
    return entry | ({"name": name} if name else {})


def test_issuer_names_are_unique_and_api_key_is_reserved() -> None:
    assert messages({"issuers": [issuer("a", "x"), issuer("a", "y")]}) == [
        "issuer name 'a' is used twice"
    ]
    assert messages({"issuers": [issuer("a", "x"), issuer(None, "a")]}) == [
        "issuer name 'a' is used twice"
    ]
    assert messages({"issuers": [issuer("api_key", "x")]}) == [
        "'api_key' names API-key callers; pick another issuer name"
    ]


@pytest.mark.parametrize("iss", ["https://a\r\nX-User-Id: admin", "https://a\x00", " https://a"])
def test_issuer_that_cannot_be_forwarded_is_refused(iss: str) -> None:
    assert any("cannot be forwarded as a header value" in m for m in messages(issuer(None, iss)))
    shorthand = {"issuer": iss, "secret": "s" * 32, "audiences": ["api"]}
    assert any("cannot be forwarded" in m for m in messages(shorthand))


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("X-User-Id", "issuer_header 'X-User-Id' is already the header of claim 'sub'"),
        ("Host", "'Host' is a header the gateway or HTTP owns"),
        ("X User", "'X User' is not a valid header name"),
    ],
)
def test_issuer_header_is_checked(header: str, expected: str) -> None:
    data = {"issuers": [issuer("a", "x")], "issuer_header": header}
    assert messages(data) == [expected]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ({"issuers": []}, "issuers: list at least one (omit the key to accept every issuer)"),
        ({"mode": "none", "issuers": ["a"]}, "issuers need mode: required, optional or shadow"),
        ({"roles": {}}, "roles: an empty mapping accepts no issuer; use [] for no roles"),
        (
            {"mode": "optional", "roles": {"a": ["x"]}},
            "roles and scopes need mode: required or shadow",
        ),
        (
            {"issuers": ["a"], "roles": {"b": ["x"]}},
            "roles names issuer 'b', which issuers does not list",
        ),
    ],
)
def test_route_policy_mistakes_read_clearly(policy: dict[str, Any], expected: str) -> None:
    assert messages(policy, RoutePolicy) == [expected]


def test_policy_problems_name_unknown_issuers_with_the_known_ones() -> None:
    policy = RoutePolicy(issuers=["main", "nope"], roles={"main": ["a"], "nope": []})
    assert settings().policy_problems(policy) == [
        f"issuers[1]: no issuer named 'nope' (known: main, {PARTNER}, api_key)",
        f"roles.nope: no issuer named 'nope' (known: main, {PARTNER}, api_key)",
    ]
    jwt_only = AuthSettings.model_validate({"issuers": [issuer("main", MAIN)]})
    assert jwt_only.policy_problems(RoutePolicy(issuers=["api_key"])) == [
        "issuers[0]: no issuer named 'api_key' (known: main)"
    ]
