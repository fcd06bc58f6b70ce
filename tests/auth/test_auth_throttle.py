"""The credential-guessing throttle on its own: what counts, whose budget, and when it yields."""

from __future__ import annotations

from typing import Any

import pytest

from gw.auth import AuthSettings, Forbidden, InvalidToken, Unauthorized
from gw.auth.errors import AuthUnavailable, TooManyAuthFailures
from gw.auth.settings import FailureLimitSettings
from gw.auth.throttle import FailureThrottle, counts, key_for
from gw.limits import LimiterUnavailable, Rate
from gw.limits.local import LocalLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 10**12

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1e9)


def throttle(limit: int = 3, period: float = 3.0) -> tuple[FailureThrottle, Clock]:
    clock = Clock()
    limiter = LocalLimiter(clock=clock)
    return FailureThrottle(Rate(limit, period), lambda: limiter), clock


def test_the_failure_after_the_budget_is_refused_with_retry_after() -> None:
    guard, _ = throttle(limit=3, period=3.0)
    for _ in range(3):
        guard.check("203.0.113.9")
        guard.record_failure("203.0.113.9")
    with pytest.raises(TooManyAuthFailures) as info:
        guard.check("203.0.113.9")
    error = info.value
    assert (error.status, error.code) == (429, "too_many_auth_failures")
    assert error.headers == {"Retry-After": "1"}
    assert error.to_dict()["retry_after"] == 1
    guard.check("203.0.113.10")  # another address has its own budget


def test_budget_refills_at_the_configured_rate() -> None:
    guard, clock = throttle(limit=3, period=3.0)
    for _ in range(3):
        guard.record_failure("192.0.2.1")
    with pytest.raises(TooManyAuthFailures):
        guard.check("192.0.2.1")
    clock.advance(1.0)  # one failure's worth
    guard.check("192.0.2.1")
    guard.record_failure("192.0.2.1")
    with pytest.raises(TooManyAuthFailures):
        guard.check("192.0.2.1")


def test_checking_costs_nothing() -> None:
    guard, _ = throttle(limit=1)
    for _ in range(50):
        guard.check("192.0.2.2")
    guard.record_failure("192.0.2.2")
    with pytest.raises(TooManyAuthFailures):
        guard.check("192.0.2.2")


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9", True),  # one /64, one host
        ("2001:db8:1:2::1", "2001:db8:1:3::1", False),
        ("::ffff:192.0.2.7", "192.0.2.7", True),  # IPv4-mapped is the IPv4 address
        ("::ffff:192.0.2.7", "::ffff:192.0.2.8", False),
        ("::1", "::2", False),  # loopback is one address, not ::/64
        ("127.0.0.1", "127.0.0.2", False),
    ],
)
def test_whose_budget_an_address_draws_from(first: str, second: str, same: bool) -> None:
    assert (key_for(first) == key_for(second)) == same


def test_unparseable_address_still_gets_a_budget_of_its_own() -> None:
    assert key_for("unix") == "auth_failures|unix"


@pytest.mark.parametrize(
    ("error", "counted"),
    [
        (InvalidToken("bad", reason="bad_signature"), True),
        (InvalidToken("bad", reason="unknown_api_key"), True),
        (InvalidToken("bad", reason="not_bearer"), True),
        (InvalidToken("old", reason="expired", signed=True), False),
        (Unauthorized("none sent"), False),
    ],
)
def test_what_counts(error: Unauthorized, counted: bool) -> None:
    assert counts(error) is counted


def test_forbidden_and_unavailable_are_not_authentication_failures() -> None:
    assert not issubclass(Forbidden, Unauthorized)
    assert not issubclass(AuthUnavailable, Unauthorized)


class Broken:
    def check(self, key: str, rate: Rate, cost: int = 1) -> Any:
        raise LimiterUnavailable("rate-limit table full")

    peek = check

    def check_all(self, buckets: Any, cost: int = 1) -> Any:
        raise LimiterUnavailable("rate-limit table full")

    def reset(self, key: str) -> bool:
        return False

    def stats(self) -> dict[str, Any]:
        return {}


def test_an_undecided_limiter_admits(caplog: pytest.LogCaptureFixture) -> None:
    guard = FailureThrottle(Rate(1, 1.0), Broken)
    guard.check("192.0.2.3")
    guard.record_failure("192.0.2.3")
    assert "could not decide" in caplog.text


def test_a_backend_that_cannot_peek_is_refused() -> None:
    class CheckOnly:
        def check(self, key: str, rate: Rate, cost: int = 1) -> Any:
            raise AssertionError

    with pytest.raises(TypeError, match="cannot peek"):
        FailureThrottle(Rate(1, 1.0), CheckOnly).check("192.0.2.4")


def test_settings_default_to_20_a_minute_and_null_turns_it_off() -> None:
    base = {"issuer": "https://idp", "secret": "s" * 32, "audiences": ["api"]}
    settings = AuthSettings.model_validate(base)
    assert settings.failure_limit == FailureLimitSettings(limit=20, period=60)
    assert AuthSettings.model_validate(base | {"failure_limit": None}).failure_limit is None
    compiled = FailureThrottle.from_settings(
        FailureLimitSettings(limit=5, period=10, burst=2), Broken
    )
    assert compiled.rate == Rate(5, 10, 2)
