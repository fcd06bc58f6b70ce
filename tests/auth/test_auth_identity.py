"""Identity headers: what the upstream receives is exactly what the claims said, or nothing."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gw.auth.identity import (
    UnsafeClaim,
    build_identity,
    check_header_value,
    header_text,
    owned_header_names,
)
from gw.auth.settings import DEFAULT_CLAIM_HEADERS


def identity_of(claims: dict[str, Any], mapping: dict[str, str] | None = None) -> Any:
    return build_identity(
        claims, method="jwt", key_id="k1", claim_headers=mapping or DEFAULT_CLAIM_HEADERS
    )


def test_seed_003_identity_headers() -> None:
    identity = identity_of({"sub": "usr_8a3f", "role": "customer", "exp": 1})
    assert identity.headers() == [("X-User-Id", "usr_8a3f"), ("X-User-Role", "customer")]
    assert (identity.subject, identity.role, identity.key_id) == ("usr_8a3f", "customer", "k1")


def test_absent_claim_sends_no_header() -> None:
    assert identity_of({"sub": "u1"}).headers() == [("X-User-Id", "u1")]


def test_numbers_and_booleans_are_converted() -> None:
    mapping = {"sub": "X-User-Id", "tier": "X-Tier", "beta": "X-Beta", "w": "X-Weight"}
    identity = identity_of({"sub": "u", "tier": 3, "beta": True, "w": 0.5}, mapping)
    assert identity.headers() == [
        ("X-User-Id", "u"),
        ("X-Tier", "3"),
        ("X-Beta", "true"),
        ("X-Weight", "0.5"),
    ]


def test_clean_lists_are_joined_with_commas() -> None:
    identity = identity_of({"sub": "u", "role": ["admin", "billing"]})
    assert ("X-User-Role", "admin,billing") in identity.headers()
    assert identity.roles == {"admin", "billing"}


@pytest.mark.parametrize(
    "value",
    [
        "usr\r\nX-Admin: true",
        "usr\nx",
        "usr\x00",
        "usr\x7f",
        "usr\x85",  # C1 control (NEL)
        "usr\tx",
        "用户",
        "u" * 257,
        "",
        " padded",
        {"nested": "object"},
        ["ok", "with,comma"],
        ["ok", "bad\r\n"],
        ["ok", {"x": 1}],
        float("nan"),
    ],
)
def test_unsafe_claims_are_rejected_not_dropped(value: Any) -> None:
    with pytest.raises(UnsafeClaim) as info:
        identity_of({"sub": "u", "role": value})
    assert info.value.claim == "role" and info.value.reason == "unsafe_claim"


def test_latin1_text_is_allowed() -> None:
    assert identity_of({"sub": "José"}).headers() == [("X-User-Id", "José")]


def test_unsafe_subject_is_rejected_even_when_not_mapped() -> None:
    with pytest.raises(UnsafeClaim):
        identity_of({"sub": "a\r\nb"}, {"role": "X-User-Role"})


@pytest.mark.parametrize("claims", [{}, {"sub": ""}, {"sub": 42}, {"sub": None}])
def test_a_subject_is_required(claims: dict[str, Any]) -> None:
    with pytest.raises(UnsafeClaim) as info:
        identity_of(claims)
    assert info.value.reason == "missing_claim"


def test_256_characters_is_the_limit() -> None:
    assert check_header_value("u" * 256) == "u" * 256
    with pytest.raises(ValueError):
        check_header_value("u" * 257)


def test_empty_list_sends_nothing() -> None:
    assert header_text("role", []) is None


def test_scopes_from_scope_and_scp() -> None:
    assert identity_of({"sub": "u", "scope": "a b  c"}).scopes == {"a", "b", "c"}
    assert identity_of({"sub": "u", "scp": ["a", "b"]}).scopes == {"a", "b"}
    assert identity_of({"sub": "u", "scp": "a b"}).scopes == {"a", "b"}


def test_roles_from_role_and_roles() -> None:
    identity = identity_of({"sub": "u", "role": "customer", "roles": ["beta", 7]})
    assert identity.roles == {"customer", "beta"}


def test_claims_are_read_only() -> None:
    identity = identity_of({"sub": "u"})
    with pytest.raises(TypeError):
        identity.claims["sub"] = "admin"


def test_owned_header_names_cover_every_spelling_form() -> None:
    assert owned_header_names({"sub": "X-User-Id", "org": "X_Org.Id"}) == {
        "x-user-id",
        "x-org-id",
    }


_CLAIM_VALUES = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(max_codepoint=0x200)),
    st.lists(st.one_of(st.text(max_size=20), st.integers(), st.booleans()), max_size=5),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
)


@settings(max_examples=300, deadline=None)
@given(_CLAIM_VALUES)
def test_whatever_a_claim_holds_its_header_is_safe_or_refused(value: Any) -> None:
    """Invariant: a claim becomes a Latin-1 header value of 1-256 chars with no control
    character and no edge spaces, or it is refused; it is never silently altered."""
    try:
        text = header_text("claim", value)
    except UnsafeClaim:
        return
    if text is None:
        assert value is None or value == []
        return
    text.encode("latin-1")
    assert 0 < len(text) <= 256 and text == text.strip(" ")
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text)
    if isinstance(value, str):
        assert text == value
