"""The compiled passes over header fields (gw/core/_fields.c) keep and drop exactly what their
Python forms in gw.core.headers do, and leave to them what they do not decide: a name that is
not ASCII, a pair that is not two strings, an answer with a Connection field.

CI builds them and sets ``GW_REQUIRE_COMPILED=1`` (see tests/unit/test_accesslog_compiled.py).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gw.core import headers as module
from gw.core.headers import (
    GATEWAY_OWNED,
    HOP_BY_HOP,
    Headers,
    canonical_name,
    forwardable,
    forwardable_by_name,
    response_headers,
    values_of,
)

compiled = pytest.mark.skipif(
    module.upstream_fields is None,
    reason="gw.core._fields is not built here (no C compiler at install)",
)


def test_ci_has_the_compiled_form() -> None:
    if os.environ.get("GW_REQUIRE_COMPILED") != "1":
        pytest.skip("only where the build is required (CI)")
    assert module.upstream_fields is not None
    assert module.answer_fields is not None
    assert module.field_values is not None


# Names near the ones that matter: owned and hop-by-hop names in other spellings (case, "_"
# and "." for "-"), the Kelvin sign and the dotted I (whose lower case is ASCII, or longer).
NEAR = [
    "X-User-Id",
    "x_user_id",
    "X.USER.ID",
    "Host",
    "HOST",
    "Transfer-Encoding",
    "transfer_encoding",
    "Keep-Alive",
    "TE",
    "Upgrade",
    "Accept",
    "accept",
    "X-Kept",
    "Connection",
    "\u212aeep-Alive",  # Kelvin sign: lower() is "keep-alive"
    "\u0130d",  # dotted I: lower() is two characters
    "Caf\u00e9",
    "a" * 300,
]
names = st.one_of(
    st.sampled_from(NEAR),
    st.text(alphabet="AaBbXx-_.09", min_size=1, max_size=8),
)
values = st.text(alphabet="ab ,;=\t", max_size=6)
pairs = st.lists(st.tuples(names, values), max_size=10)


def _python_forwardable_by_name(fields: Headers, owned: frozenset[str]) -> dict[str, str]:
    return dict(forwardable(fields, owned))


@compiled
@settings(max_examples=400, deadline=None)
@given(pairs, st.sets(st.sampled_from(["x-user-id", "x-kept", "accept", "x-a"])))
def test_forwardable_fields_are_the_python_forms(
    fields: list[tuple[str, str]], extra: set[str]
) -> None:
    owned = GATEWAY_OWNED | frozenset(extra)
    headers = Headers(list(fields))
    got = forwardable_by_name(headers, owned)
    expected = _python_forwardable_by_name(headers, owned)
    assert list(got.items()) == list(expected.items())  # the same fields, in the same order


@compiled
@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(names.map(str.lower) | st.just("connection"), values), max_size=10))
def test_answer_fields_are_the_python_forms(fields: list[tuple[str, str]]) -> None:
    got = response_headers(list(fields))
    saved = module.answer_fields
    module.answer_fields = None
    try:
        expected = response_headers(list(fields))
    finally:
        module.answer_fields = saved
    assert got == expected


@compiled
@settings(max_examples=400, deadline=None)
@given(pairs, st.sampled_from(["authorization", "x-api-key", "keep-alive", "x-kept", "id", "te"]))
def test_a_fields_values_are_the_python_forms(fields: list[tuple[str, str]], form: str) -> None:
    expected = [v for n, v in fields if canonical_name(n) == form]
    assert values_of(list(fields), form) == expected
    assert values_of(tuple(fields), form) == expected  # not a list: the Python form


@compiled
def test_the_compiled_pass_decides_the_usual_fields_and_leaves_the_rest() -> None:
    assert module.upstream_fields is not None and module.answer_fields is not None
    dropped = HOP_BY_HOP | GATEWAY_OWNED
    usual = [("Host", "a"), ("User-Agent", "u"), ("X_User_Id", "evil"), ("Accept", "*/*")]
    assert module.upstream_fields(usual, dropped) == {"User-Agent": "u", "Accept": "*/*"}
    # APPSEC: a Kelvin-sign "Keep-Alive" is dropped by the Python form's lower(): left to it
    for odd in [("\u212aeep-Alive", "1"), ("X", 1), ("X",), ["X", "1"], ("a" * 300, "1")]:
        assert module.upstream_fields([*usual, odd], dropped) is None
    answer = [("content-type", "a"), ("keep-alive", "5"), ("set-cookie", "a"), ("set-cookie", "b")]
    assert module.answer_fields(answer, HOP_BY_HOP) == [answer[0], answer[2], answer[3]]
    assert module.answer_fields([*answer, ("connection", "set-cookie")], HOP_BY_HOP) is None
    assert response_headers([*answer, ("connection", "set-cookie")]) == [answer[0]]
    spelt = [("Authorization", "a"), ("X_Api_Key", "k"), ("x.api.key", "l"), ("Te", "t")]
    assert module.field_values(spelt, "x-api-key") == ["k", "l"]
    assert module.field_values([*spelt, ("\u212a", "1")], "te") == ["t"]  # other lengths pass
    assert module.field_values([*spelt, ("\u212ae", "1")], "te") is None  # ke, perhaps
    assert module.field_values(spelt, "caf\u00e9") is None


def test_a_kelvin_sign_keep_alive_is_never_forwarded() -> None:
    headers = Headers([("\u212aeep-Alive", "timeout=5"), ("Accept", "*/*")])
    assert forwardable_by_name(headers) == {"Accept": "*/*"}
