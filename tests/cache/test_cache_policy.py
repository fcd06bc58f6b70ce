"""What may be served from the cache and what may be stored, for how long."""

from __future__ import annotations

import pytest

from gw.cache.policy import parse_cache_control, request_bypass, response_ttl
from gw.cache.settings import DEFAULT_STATUSES


def _ttl(
    headers: list[tuple[str, str]],
    status: int = 200,
    identity: bool = False,
    vary: tuple[str, ...] = (),
) -> float:
    return response_ttl(status, headers, 30, DEFAULT_STATUSES, vary, identity).ttl


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_unsafe_methods_bypass(method: str) -> None:
    assert request_bypass(method, {}, identity_keyed=False) == "method"


def test_get_and_head_may_use_the_cache() -> None:
    assert request_bypass("GET", {}, identity_keyed=False) is None
    assert request_bypass("head", {}, identity_keyed=False) is None


@pytest.mark.parametrize(
    "headers",
    [
        {"cache-control": "no-cache"},
        {"cache-control": "max-age=0, No-Store"},
        {"pragma": "no-cache"},
    ],
)
def test_client_no_cache_bypasses_unless_the_route_ignores_it(headers: dict[str, str]) -> None:
    assert request_bypass("GET", headers, identity_keyed=False) == "client no-cache"
    assert request_bypass("GET", headers, False, honor_client_no_cache=False) is None


def test_authorization_bypasses_only_without_identity_in_the_key() -> None:
    headers = {"authorization": "Bearer x"}
    assert request_bypass("GET", headers, identity_keyed=False) == "authorization"
    assert request_bypass("GET", headers, identity_keyed=True) is None


def test_plain_response_lives_for_the_route_ttl() -> None:
    assert _ttl([("Content-Type", "application/json")]) == 30


@pytest.mark.parametrize(
    ("cache_control", "ttl"),
    [
        ("max-age=10", 10),
        ("max-age=100", 30),
        ("public, max-age=10", 10),
        ("s-maxage=5, max-age=20", 5),
        ("max-age=20, s-maxage=50", 30),
        ("max-age=0", 0),
        ('max-age="10"', 10),
        ("max-age=ten", 0),
        ("no-store", 0),
        ("no-cache", 0),
        ('no-cache="Set-Cookie", max-age=10', 0),
        ("private", 0),
        ("private, max-age=10", 0),
        ("must-revalidate, max-age=10", 10),
        ("NO-STORE", 0),
        ("max-age=10, max-age=20", 10),
    ],
)
def test_cache_control(cache_control: str, ttl: float) -> None:
    assert _ttl([("Cache-Control", cache_control)]) == ttl


def test_cache_control_across_several_headers() -> None:
    assert _ttl([("Cache-Control", "max-age=10"), ("Cache-Control", "no-store")]) == 0


def test_private_is_stored_per_user_when_the_key_holds_the_identity() -> None:
    assert _ttl([("Cache-Control", "private, max-age=10")], identity=True) == 10


def test_upstream_age_shortens_the_life_and_is_reported() -> None:
    storage = response_ttl(
        200, [("Cache-Control", "max-age=10"), ("Age", "4")], 30, DEFAULT_STATUSES, (), False
    )
    assert (storage.ttl, storage.age) == (6, 4)
    assert _ttl([("Cache-Control", "max-age=10"), ("Age", "12")]) == 0


@pytest.mark.parametrize("status", [201, 206, 302, 500, 502, 503])
def test_unlisted_statuses_are_not_stored(status: int) -> None:
    assert _ttl([], status=status) == 0


def test_set_cookie_is_never_stored() -> None:
    assert _ttl([("Set-Cookie", "s=1")], identity=True) == 0


def test_vary() -> None:
    assert _ttl([("Vary", "*")]) == 0
    assert _ttl([("Vary", "Accept-Encoding")]) == 0
    assert _ttl([("Vary", "Accept-Encoding, Accept-Language")], vary=("accept-language",)) == 0
    both = ("accept-encoding", "accept-language")
    assert _ttl([("Vary", "Accept-Encoding, Accept-Language")], vary=both) == 30


def test_parse_keeps_quoted_commas_together() -> None:
    assert parse_cache_control(['no-cache="a, b", max-age=3']) == {
        "no-cache": "a, b",
        "max-age": "3",
    }
