"""Whose bucket a request draws from: one client address, one bucket, never a stranger's."""

from __future__ import annotations

import io
from collections.abc import Callable
from types import SimpleNamespace

import pytest

from gw.core.forwarding import TrustedProxies
from gw.core.gcra import Decision
from gw.core.headers import GATEWAY_OWNED
from gw.core.identity import Identity
from gw.core.ingress import exchange_from, request_from
from gw.core.request import Request
from gw.errors import GatewayError, Unauthorized
from gw.limits import LimiterUnavailable, Rate, StripeFrozen
from gw.limits import admission as admission_module
from gw.limits.admission import (
    Admission,
    Limit,
    MissingLimitKey,
    RateLimited,
    Requester,
    bucket_key,
)
from gw.limits.local import LocalLimiter
from gw.limits.settings import RateLimitingSettings
from tests.support.ratelimit_observer import told


def _bucket(ip: str, key: tuple[str, ...] = ("client_ip",)) -> str:
    return bucket_key(Limit("l", Rate(1, 60), key), Requester(client_ip=ip, route="r", headers={}))


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("::ffff:10.0.0.1", "::ffff:10.0.0.2"),  # IPv4 clients of a dual-stack listener
        ("::ffff:10.0.0.1", "::1"),
        ("::1", "::2"),  # loopback, and the deprecated IPv4-compatible ::0.0.0.2
        ("::1", "::"),
        ("::10.0.0.1", "::10.0.0.2"),  # IPv4-compatible (deprecated): kept whole, not /64
        ("fe80::1", "fe80::2"),  # link-local: the /64 is the whole link, not one site
        ("64:ff9b::10.0.0.1", "64:ff9b::10.0.0.2"),  # NAT64 well-known prefix
        ("2001:db8:0:1::1", "2001:db8:0:2::1"),
    ],
)
def test_different_clients_never_share_a_bucket(first: str, second: str) -> None:
    assert _bucket(first) != _bucket(second)


@pytest.mark.parametrize(
    ("wrapped", "plain"),
    [
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("::FFFF:0a00:0001", "10.0.0.1"),
        ("64:ff9b::10.0.0.1", "10.0.0.1"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "192.0.2.45"),  # Teredo: its client's IPv4
    ],
)
def test_an_ipv4_client_has_one_bucket_however_its_address_is_spelled(
    wrapped: str, plain: str
) -> None:
    assert _bucket(wrapped) == _bucket(plain) == "l|ip:" + plain


def test_ipv6_clients_are_grouped_by_64_where_one_site_owns_the_64() -> None:
    assert _bucket("2001:db8::1") == _bucket("2001:db8::ffff:1") == "l|ip:2001:db8::/64"
    assert _bucket("fd00:1:2:3::9") == "l|ip:fd00:1:2:3::/64"


def test_loopback_and_ipv4_compatible_are_keyed_whole() -> None:
    assert _bucket("::1") == "l|ip:::1"
    assert _bucket("::10.0.0.1") == "l|ip:::a00:1"


def test_fallbacks_to_the_client_address_use_the_same_key() -> None:
    for key in (("user",), ("api_key",), ("header:X-Tenant",)):
        assert _bucket("::ffff:10.0.0.1", key) == "l|ip:10.0.0.1"


def test_what_is_not_an_address_is_kept_as_it_is() -> None:
    assert _bucket("unix") == "l|ip:unix"
    assert _bucket("") == "l|ip:"


# -- when a key's part is missing (when_missing) -------------------------------------------

JWT_USER = Requester(client_ip="10.0.0.1", route="r", headers={}, subject="alice")
KEY_USER = Requester(
    client_ip="10.0.0.1", route="r", headers={"x-tenant": "t1"}, subject="acme", api_key="k1"
)
ANONYMOUS = Requester(client_ip="10.0.0.1", route="r", headers={})


def _limit(key: str, when_missing: str = "client_ip") -> Limit:
    return Limit("l", Rate(1, 60), tuple(key.split("+")), when_missing)


@pytest.mark.parametrize("key", ["user", "api_key", "header:X-Tenant"])
def test_a_present_part_keys_the_bucket_whatever_the_fallback(key: str) -> None:
    for when_missing in ("client_ip", "skip", "reject"):
        assert bucket_key(_limit(key, when_missing), KEY_USER) in (
            "l|user:acme",
            "l|key:k1",
            "l|h:x-tenant=t1",
        )


def test_a_header_key_finds_the_header_whatever_its_spelling() -> None:
    for spelling in ("X-Tenant", "x-tenant", "X-TENANT"):
        who = Requester(client_ip="10.0.0.1", route="r", headers={"Accept": "*/*", spelling: "t1"})
        for key in ("header:X-Tenant", "header:x-tenant"):
            assert bucket_key(_limit(key), who) == "l|h:x-tenant=t1"


@pytest.mark.parametrize(
    ("key", "who"), [("user", ANONYMOUS), ("api_key", JWT_USER), ("header:X-Tenant", JWT_USER)]
)
def test_client_ip_puts_the_address_in_the_missing_parts_place(key: str, who: Requester) -> None:
    assert bucket_key(_limit(key), who) == "l|ip:10.0.0.1"


def test_client_ip_replaces_only_the_missing_part_of_a_compound_key() -> None:
    assert bucket_key(_limit("api_key+route"), JWT_USER) == "l|ip:10.0.0.1|route:r"
    assert bucket_key(_limit("user+api_key"), JWT_USER) == "l|user:alice|ip:10.0.0.1"


@pytest.mark.parametrize(
    ("key", "who"), [("user", ANONYMOUS), ("api_key", JWT_USER), ("header:X-Tenant", JWT_USER)]
)
def test_skip_leaves_the_request_out_of_the_limit(key: str, who: Requester) -> None:
    assert bucket_key(_limit(key, "skip"), who) is None


def test_skip_applies_when_any_part_of_a_compound_key_is_missing() -> None:
    assert bucket_key(_limit("user+api_key", "skip"), JWT_USER) is None
    assert bucket_key(_limit("user+route", "skip"), JWT_USER) == "l|user:alice|route:r"


@pytest.mark.parametrize(
    ("key", "who", "message"),
    [
        ("user", ANONYMOUS, "this request needs an authenticated user (rate limit 'l')"),
        ("api_key", JWT_USER, "this request needs an API key (rate limit 'l')"),
    ],
)
def test_reject_refuses_a_missing_identity_like_auth_does(
    key: str, who: Requester, message: str
) -> None:
    with pytest.raises(Unauthorized) as info:
        bucket_key(_limit(key, "reject"), who)
    assert info.value.status == 401
    assert info.value.to_dict() == {"error": "unauthorized", "message": message}
    assert info.value.headers["WWW-Authenticate"] == 'Bearer realm="gw"'


def test_reject_refuses_a_missing_header_as_a_bad_request() -> None:
    with pytest.raises(MissingLimitKey) as info:
        bucket_key(_limit("header:X-Tenant", "reject"), JWT_USER)
    assert info.value.status == 400
    assert info.value.to_dict() == {
        "error": "missing_header",
        "message": "the X-Tenant header is required (rate limit 'l')",
    }


def _admission(limits: list[dict[str, object]]) -> Admission:
    settings = RateLimitingSettings.model_validate(
        {"overrides": [{"path": "/x/**", "limits": limits}]}
    )
    limiter = LocalLimiter()
    return Admission(settings, lambda: limiter)


def test_seed_002s_ip_user_and_api_key_levels_are_independent() -> None:
    admission = _admission(
        [
            {"name": "ip", "requests_per_minute": 100, "key": "client_ip"},
            {"name": "user", "requests_per_minute": 3, "key": "user", "when_missing": "skip"},
            {"name": "key", "requests_per_minute": 2, "key": "api_key", "when_missing": "skip"},
        ]
    )
    limits = admission.limits_for("GET", "/x/a")
    bob = Requester(client_ip="10.0.0.1", route="r", headers={}, subject="bob")
    partner = Requester(client_ip="10.0.0.1", route="r", headers={}, subject="acme", api_key="k")
    assert admission.admit(limits, ANONYMOUS)[0] == ("X-RateLimit-Limit", "100")
    for who in (JWT_USER, bob):  # JWT users: ip and user only; they share no API-key bucket
        assert [dict(admission.admit(limits, who))["X-RateLimit-Remaining"] for _ in range(3)] == [
            "2",
            "1",
            "0",
        ]
    assert dict(admission.admit(limits, partner))["X-RateLimit-Limit"] == "2"
    admission.admit(limits, partner)
    with pytest.raises(RateLimited) as info:
        admission.admit(limits, partner)
    assert info.value.headers["X-RateLimit-Limit"] == "2"


def test_a_limit_every_request_skips_adds_no_headers() -> None:
    admission = _admission([{"requests_per_minute": 1, "key": "api_key", "when_missing": "skip"}])
    limits = admission.limits_for("GET", "/x/a")
    assert [admission.admit(limits, JWT_USER) for _ in range(3)] == [[], [], []]


def test_a_rejected_key_takes_no_token_from_the_other_limits() -> None:
    admission = _admission(
        [
            {"name": "ip", "requests_per_minute": 1, "key": "client_ip"},
            {
                "name": "t",
                "requests_per_minute": 5,
                "key": "header:X-Tenant",
                "when_missing": "reject",
            },
        ]
    )
    limits = admission.limits_for("GET", "/x/a")
    with pytest.raises(MissingLimitKey):
        admission.admit(limits, JWT_USER)
    assert dict(admission.admit(limits, KEY_USER))["X-RateLimit-Remaining"] == "0"


class _Backend:
    """A limiter that admits, refuses, or cannot decide (``LimiterUnavailable``, or a
    ``StripeFrozen`` stripe), as told."""

    def __init__(self, outcome: str) -> None:
        self.outcome = outcome
        self.local = LocalLimiter()

    def check_all(self, buckets: list[tuple[str, Rate]], cost: int = 1) -> list[Decision]:
        if self.outcome == "unavailable":
            raise LimiterUnavailable("timeout")
        if self.outcome == "frozen":
            raise StripeFrozen("stopped holder")
        if self.outcome == "refuse":
            self.local.check_all(buckets)  # the bucket's one token, taken
        return self.local.check_all(buckets)

    def check(self, key: str, rate: Rate, cost: int = 1) -> Decision:
        return self.check_all([(key, rate)], cost)[0]


def _verdict(admission: Admission, limits: tuple[Limit, ...]) -> tuple[object, ...]:
    seen: list[tuple[str, str, str]] = []
    admission.observe = told(seen)
    try:
        headers: object = admission.admit(limits, JWT_USER)
    except GatewayError as ex:
        headers = (type(ex).__name__, ex.status, ex.to_dict(), ex.headers)
    return headers, seen


@pytest.mark.parametrize("outcome", ["admit", "refuse", "unavailable", "frozen"])
@pytest.mark.parametrize("on_error", ["fail_open", "fail_closed"])
def test_one_limit_is_decided_as_the_general_path_decides_it(
    outcome: str, on_error: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A route with one enforced limit takes a shorter path (``Admission._admit_key``): the
    same headers, refusal and counts as when the same limit is decided with another that
    this caller skips (``admit``'s path for several limits)."""
    one = {"name": "ip", "requests_per_minute": 1, "key": "client_ip"}
    skipped = {"name": "k", "requests_per_minute": 1, "key": "api_key", "when_missing": "skip"}
    settings = RateLimitingSettings.model_validate(
        {"on_error": on_error, "overrides": [{"path": "/x/**", "limits": [one, skipped]}]}
    )
    both = Admission(settings, lambda: _Backend(outcome))
    single = Admission(settings, lambda: _Backend(outcome))
    limits = both.limits_for("GET", "/x/a")
    monkeypatch.setattr(admission_module, "time", SimpleNamespace(time=lambda: 1.8e9))
    general, alone = _verdict(both, limits), _verdict(single, limits[:1])
    assert alone == general
    if outcome == "admit":
        assert dict(alone[0])["X-RateLimit-Remaining"] == "0"
    elif outcome == "refuse":
        assert alone[0][:2] == ("RateLimited", 429)
    elif on_error == "fail_open" and outcome == "unavailable":
        assert alone == ([], [("ip", "failed_open", "enforce")])
    else:
        assert alone[0][:2] == ("LimiterDown", 503)


def _request(ip: str, identity: Identity | None) -> Request:
    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": "/x/a",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": ip,
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "HTTP_HOST": "api.example",
    }
    request = request_from(exchange_from(environ, TrustedProxies([])), environ, GATEWAY_OWNED)
    request.identity = identity
    return request


CALLERS = {
    "anonymous": None,
    "token": Identity("alice", None, {}, "jwt", "kid-1", issuer="https://idp.example"),
    "api key": Identity("billing", None, {}, "api_key", "key-7"),
}


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("part", ["client_ip", "route", "user", "api_key"])
@pytest.mark.parametrize("when_missing", ["client_ip", "skip", "reject"])
@pytest.mark.parametrize("ip", ["192.0.2.7", "::ffff:10.0.0.1", "2001:db8:0:1::1"])
def test_a_one_part_limit_keys_a_request_as_bucket_key_does(
    caller: str, part: str, when_missing: str, ip: str
) -> None:
    """``Limit.keyer`` (the usual limit's key, read from the request) gives ``bucket_key``'s
    key, None or refusal."""
    limit = Limit("l", Rate(1, 60), (part,), when_missing=when_missing)
    request = _request(ip, CALLERS[caller])

    def outcome(make: Callable[[], str | None]) -> object:
        try:
            return make()
        except GatewayError as ex:
            return (type(ex).__name__, ex.status, str(ex))

    assert limit.keyer is not None
    expected = outcome(lambda: bucket_key(limit, Requester.of(request, "r", {})))
    assert outcome(lambda: limit.keyer(request, "r")) == expected  # type: ignore[misc]


def test_a_limit_on_a_header_or_on_two_parts_has_no_keyer() -> None:
    assert Limit("l", Rate(1, 60), ("header:x-tenant",)).keyer is None
    assert Limit("l", Rate(1, 60), ("user", "route")).keyer is None


@pytest.mark.parametrize(
    "limits",
    [
        [{"name": "u", "requests_per_minute": 2, "key": "user"}],
        [{"name": "t", "requests_per_minute": 2, "key": "header:x-tenant"}],
        [
            {"name": "u", "requests_per_minute": 2, "key": "user"},
            {"name": "ip", "requests_per_minute": 2, "key": "client_ip"},
        ],
    ],
)
def test_admitting_a_request_is_admitting_its_requester(limits: list[dict[str, object]]) -> None:
    """``admit_request`` (the pipeline's) decides as ``admit`` of the request's Requester."""
    settings = RateLimitingSettings.model_validate(
        {"overrides": [{"path": "/x/**", "limits": limits}]}
    )
    by_request = Admission(settings, LocalLimiter)
    by_requester = Admission(settings, LocalLimiter)
    request = _request("192.0.2.7", CALLERS["token"])
    headers = {"X-Tenant": "acme"}
    for _ in range(3):
        try:
            got: object = by_request.admit_request(request, "r", headers)
        except GatewayError as ex:
            got = (type(ex).__name__, ex.status, ex.headers.get("Retry-After"))
        who = Requester.of(request, "r", headers)
        try:
            expected: object = by_requester.admit(by_requester.limits_for("GET", "/x/a"), who)
        except GatewayError as ex:
            expected = (type(ex).__name__, ex.status, ex.headers.get("Retry-After"))
        assert _without_reset(got) == _without_reset(expected)
    assert isinstance(got, tuple) and got[:2] == ("RateLimited", 429)  # the third is refused


def _without_reset(outcome: object) -> object:
    """The outcome less X-RateLimit-Reset (a clock second that may turn between the two)."""
    if isinstance(outcome, list):
        return [(n, v) for n, v in outcome if n != "X-RateLimit-Reset"]
    return outcome
