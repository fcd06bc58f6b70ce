"""Keys from a real JWKS server on 127.0.0.1: rotation, outages, floods, redirects, timeouts.

The cache's notion of time is a fake clock (so minutes of outage take no time); the network
timeouts are real and short.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

import pytest

from gw.auth import Authenticator, AuthUnavailable, InvalidToken
from gw.auth.jwks import HttpFetcher, JwksFetchError
from tests.auth.fakes import FakeClock, settle_refreshes
from tests.support.jwks_server import JwksServer, start_jwks_server
from tests.support.tokens import SigningKey, bearer, claims, jwks, unknown_kid, with_jku

Make = Callable[..., Authenticator]


class Counting:
    """The real fetcher, counting attempts (a refused connection never reaches the server)."""

    def __init__(self) -> None:
        self.fetcher = HttpFetcher()
        self.attempts = 0

    def __call__(self, uri: str, timeout: float) -> bytes:
        self.attempts += 1
        return self.fetcher(uri, timeout)


def ok(authenticator: Authenticator, key: SigningKey) -> bool:
    return authenticator.authenticate("/api/orders", bearer(key.mint(claims()))) is not None


def reason(authenticator: Authenticator, token: str) -> str:
    with pytest.raises(InvalidToken) as info:
        authenticator.authenticate("/api/orders", bearer(token))
    return info.value.reason


def test_keys_are_fetched_once_on_first_use(
    make_auth: Make, jwks_server: JwksServer, rsa: SigningKey, ec: SigningKey, ed: SigningKey
) -> None:
    authenticator = make_auth()
    assert jwks_server.fetches == 0
    for _ in range(20):
        assert ok(authenticator, rsa) and ok(authenticator, ec) and ok(authenticator, ed)
    assert jwks_server.fetches == 1


def test_rotation_is_picked_up_without_restart(
    make_auth: Make, jwks_server: JwksServer, clock: FakeClock, rsa: SigningKey, rsa2: SigningKey
) -> None:
    authenticator = make_auth()
    assert ok(authenticator, rsa)
    clock.advance(60)
    jwks_server.publish(jwks(rsa2))  # new key published, old one removed
    assert ok(authenticator, rsa2)  # unknown kid -> one refetch -> accepted
    assert jwks_server.fetches == 2
    assert reason(authenticator, rsa.mint(claims())) == "unknown_kid"
    assert jwks_server.fetches == 2  # the removed kid does not refetch within the cooldown


def test_expired_cache_refreshes_and_drops_removed_keys(
    make_auth: Make, jwks_server: JwksServer, clock: FakeClock, rsa: SigningKey, ec: SigningKey
) -> None:
    authenticator = make_auth()
    assert ok(authenticator, rsa)
    jwks_server.publish(jwks(ec))
    clock.advance(299)
    assert ok(authenticator, rsa)
    clock.advance(2)
    assert ok(authenticator, rsa)  # expired: answered with the known keys, refreshed behind
    settle_refreshes()
    assert reason(authenticator, rsa.mint(claims())) == "unknown_kid"
    assert ok(authenticator, ec) and jwks_server.fetches == 2


def test_provider_down_for_a_while_known_keys_keep_working(
    make_auth: Make,
    jwks_server: JwksServer,
    clock: FakeClock,
    rsa: SigningKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    counting = Counting()
    authenticator = make_auth(fetcher=counting)
    token = rsa.mint(claims())
    assert authenticator.authenticate("/a", bearer(token))
    jwks_server.go_down()
    clock.advance(301)  # the cache has expired: every request would like fresh keys
    with caplog.at_level(logging.WARNING, logger="gw.auth"):
        for _ in range(120):  # two simulated minutes of traffic, one request a second
            assert authenticator.authenticate("/a", bearer(token))
            settle_refreshes()
            clock.advance(1)
    assert counting.attempts == 1 + 8  # backoff 1, 2, 4, 8, 16 s, then every 30 s
    warnings = [r.getMessage() for r in caplog.records if r.name == "gw.auth"]
    assert len(warnings) == 8 and "keeping 3 cached key(s)" in warnings[0]
    jwks_server.come_back()
    clock.advance(30)
    assert authenticator.authenticate("/a", bearer(token))
    settle_refreshes()
    assert jwks_server.fetches == 2 and counting.attempts == 10


def test_provider_answering_errors_is_asked_a_bounded_number_of_times(
    make_auth: Make, jwks_server: JwksServer, clock: FakeClock, rsa: SigningKey
) -> None:
    authenticator = make_auth()
    assert ok(authenticator, rsa)
    jwks_server.mode = "error"
    clock.advance(301)
    for _ in range(600):  # ten simulated minutes at one request a second
        assert ok(authenticator, rsa)
        settle_refreshes()
        clock.advance(1)
    assert jwks_server.fetches <= 1 + 5 + 600 // 30


def test_flood_of_unknown_kids_costs_one_fetch_per_cooldown(
    make_auth: Make, jwks_server: JwksServer, clock: FakeClock, rsa: SigningKey
) -> None:
    authenticator = make_auth()
    assert ok(authenticator, rsa)
    tokens = [unknown_kid(rsa, kid=f"random-{i}") for i in range(300)]
    for token in tokens:
        assert reason(authenticator, token) == "unknown_kid"
    assert jwks_server.fetches == 1
    clock.advance(31)
    for token in tokens:
        reason(authenticator, token)
    assert jwks_server.fetches == 2


def test_concurrent_requests_on_a_cold_cache_fetch_once(
    make_auth: Make, jwks_server: JwksServer, rsa: SigningKey
) -> None:
    jwks_server.mode, jwks_server.delay = "slow", 0.2
    authenticator = make_auth()
    token = rsa.mint(claims())
    results: list[bool] = []

    def request() -> None:
        results.append(authenticator.authenticate("/a", bearer(token)) is not None)

    threads = [threading.Thread(target=request) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == [True] * 12
    assert jwks_server.fetches == 1


def test_redirect_is_not_followed(
    make_auth: Make, jwks_server: JwksServer, rsa: SigningKey
) -> None:
    jwks_server.mode = "redirect"
    with pytest.raises(AuthUnavailable) as info:
        make_auth().authenticate("/a", bearer(rsa.mint(claims())))
    assert info.value.status == 503
    assert jwks_server.paths == ["/.well-known/jwks.json"]  # never asked for /moved


def test_slow_provider_hits_the_timeout(
    make_auth: Make, jwks_server: JwksServer, rsa: SigningKey
) -> None:
    jwks_server.mode = "hang"
    authenticator = make_auth(jwks_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(AuthUnavailable):
        authenticator.authenticate("/a", bearer(rsa.mint(claims())))
    assert time.monotonic() - started < 2.0
    assert jwks_server.fetches == 1


def test_slow_provider_after_warm_up_keeps_the_cached_keys(
    make_auth: Make, jwks_server: JwksServer, clock: FakeClock, rsa: SigningKey
) -> None:
    authenticator = make_auth(jwks_timeout=0.2)
    assert ok(authenticator, rsa)
    jwks_server.mode, jwks_server.delay = "slow", 1.0
    clock.advance(301)
    assert ok(authenticator, rsa)
    assert ok(authenticator, rsa)
    settle_refreshes()
    assert jwks_server.fetches == 2


@pytest.mark.parametrize("mode", ["garbage", "redirect", "reset"])
def test_broken_answers_keep_the_last_good_keys(
    make_auth: Make, jwks_server: JwksServer, clock: FakeClock, rsa: SigningKey, mode: str
) -> None:
    authenticator = make_auth()
    assert ok(authenticator, rsa)
    jwks_server.mode = mode
    clock.advance(301)
    assert ok(authenticator, rsa)
    settle_refreshes()
    assert jwks_server.fetches == 2


def test_jku_header_is_never_fetched(
    make_auth: Make, rsa: SigningKey, attacker: SigningKey
) -> None:
    evil = start_jwks_server(jwks(attacker))
    try:
        authenticator = make_auth()
        assert ok(authenticator, rsa)
        assert reason(authenticator, with_jku(attacker, evil.url)) == "unknown_kid"
        token = attacker.mint(claims(), jku=evil.url, kid=None)
        assert reason(authenticator, token) == "bad_signature"
        assert evil.fetches == 0
    finally:
        evil.close()


def test_fetcher_refuses_oversized_key_sets(jwks_server: JwksServer, rsa: SigningKey) -> None:
    jwks_server.publish({"keys": [rsa.public_jwk], "padding": "x" * 5000})
    with pytest.raises(JwksFetchError):
        HttpFetcher(max_bytes=4096)(jwks_server.url, 1.0)
    assert json.loads(HttpFetcher()(jwks_server.url, 1.0))["keys"]


@pytest.mark.parametrize("uri", ["http://example.com/jwks", "file:///etc/passwd"])
def test_fetcher_refuses_insecure_uris_without_connecting(uri: str) -> None:
    with pytest.raises(ValueError):
        HttpFetcher()(uri, 1.0)


def test_known_keys_are_answered_at_once_while_a_slow_refresh_runs(
    make_auth: Make, jwks_server: JwksServer, clock: FakeClock, rsa: SigningKey, ec: SigningKey
) -> None:
    """A refresh (cache expiry, or an unknown kid) never holds a request whose key is known."""
    authenticator = make_auth(jwks_timeout=5)
    assert ok(authenticator, rsa)
    jwks_server.mode, jwks_server.delay = "slow", 3.0  # every fetch now takes 3 s
    clock.advance(301)  # expired: the next request starts a refresh
    started = time.monotonic()
    assert ok(authenticator, rsa) and ok(authenticator, ec)
    assert time.monotonic() - started < 1.0
    assert _eventually(lambda: jwks_server.fetches == 2)  # the refresh is under way meanwhile
    settle_refreshes()

    clock.advance(31)  # past the cooldown: an unknown kid may trigger a refetch
    unknown: list[str] = []
    asker = threading.Thread(
        target=lambda: unknown.append(reason(authenticator, unknown_kid(rsa, kid="rsa-new")))
    )
    asker.start()
    assert _eventually(lambda: jwks_server.fetches == 3)
    started = time.monotonic()
    assert ok(authenticator, rsa)  # a known kid does not queue behind that refetch
    assert time.monotonic() - started < 1.0
    asker.join(10)
    assert unknown == ["unknown_kid"]  # the unknown kid waited for its refetch, then lost


def _eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
