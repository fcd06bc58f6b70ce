"""CORS policies: which origins get an answer they can read, and with what."""

from __future__ import annotations

import pytest

from gw.cors import CorsPolicy
from gw.cors.settings import CorsSettings

APP = "https://app.example.com"


def _policy(origins: list[str], credentials: bool = False) -> CorsPolicy:
    return CorsPolicy.compile(CorsSettings(allowed_origins=origins, allow_credentials=credentials))


def _allowed_origin(policy: CorsPolicy, origin: str) -> str | None:
    headers = dict(policy.response_headers(origin))
    preflight = dict(policy.preflight(origin, "GET", ""))
    assert headers.get("Access-Control-Allow-Origin") == preflight.get(
        "Access-Control-Allow-Origin"
    )
    return headers.get("Access-Control-Allow-Origin")


@pytest.mark.parametrize("credentials", [False, True])
def test_null_origin_is_never_reflected_from_a_list_without_it(credentials: bool) -> None:
    """Sandboxed iframes and file: pages of every site send ``Origin: null``."""
    policy = _policy([APP], credentials)
    assert _allowed_origin(policy, "null") is None
    assert _allowed_origin(policy, APP) == APP


def test_null_origin_is_allowed_only_when_listed_literally() -> None:
    assert _allowed_origin(_policy(["null"]), "null") == "null"
    assert _allowed_origin(_policy(["null"]), APP) is None


def test_any_origin_without_credentials_answers_star_never_an_echo() -> None:
    policy = _policy(["*"])
    assert _allowed_origin(policy, "null") == "*"
    assert _allowed_origin(policy, "https://evil.example") == "*"
    assert "Access-Control-Allow-Credentials" not in dict(policy.response_headers(APP))


def test_a_policy_can_never_reflect_any_origin_with_credentials() -> None:
    """Even a settings object built without validation cannot compile into that policy."""
    settings = CorsSettings.model_construct(allowed_origins=["*"], allow_credentials=True)
    with pytest.raises(ValueError, match="allow_credentials"):
        CorsPolicy.compile(settings)
