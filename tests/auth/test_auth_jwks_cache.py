"""The key cache without sockets: parsing, single-flight, backoff, one warning per failure."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import pytest

from gw.auth.jwks import JwksCache, JwksFetchError, KeysUnavailable, parse_jwks
from tests.auth.fakes import FakeClock
from tests.support.tokens import SigningKey, jwks, rsa_key


class Provider:
    """A fetcher that serves a document, or fails, and counts calls."""

    def __init__(self, document: dict[str, Any] | None, delay: float = 0.0) -> None:
        self.document = document
        self.delay = delay
        self.calls = 0
        self.gate: threading.Event | None = None
        self.lock = threading.Lock()

    def __call__(self, uri: str, timeout: float) -> bytes:
        with self.lock:
            self.calls += 1
        if self.gate is not None:
            self.gate.wait(5)
        time.sleep(self.delay)
        if self.document is None:
            raise JwksFetchError("HTTP 503")
        return json.dumps(self.document).encode()


def cache(provider: Provider, clock: FakeClock, **kw: Any) -> JwksCache:
    kw = {"cache_seconds": 300.0, "cooldown": 30.0, "timeout": 0.5, **kw}
    return JwksCache("https://idp/jwks", provider, clock=clock, **kw)


def kids(keys: tuple[Any, ...]) -> list[str | None]:
    return [k.kid for k in keys]


def test_nothing_is_fetched_until_a_key_is_needed(rsa: SigningKey, clock: FakeClock) -> None:
    provider = Provider(jwks(rsa))
    keys = cache(provider, clock)
    assert provider.calls == 0
    assert kids(keys.keys_for("rsa-1")) == ["rsa-1"]
    assert provider.calls == 1


def test_keys_are_reused_until_they_expire(rsa: SigningKey, clock: FakeClock) -> None:
    provider = Provider(jwks(rsa))
    keys = cache(provider, clock)
    for _ in range(50):
        keys.keys_for("rsa-1")
        clock.advance(5)  # 250 s in all: still fresh
    assert provider.calls == 1
    clock.advance(60)
    keys.keys_for("rsa-1")
    assert keys.settle(5)
    assert provider.calls == 2


def test_unknown_kid_refetches_at_most_once_per_cooldown(rsa: SigningKey, clock: FakeClock) -> None:
    provider = Provider(jwks(rsa))
    keys = cache(provider, clock)
    keys.keys_for("rsa-1")
    for i in range(200):
        assert keys.keys_for(f"random-{i}") == ()
    assert provider.calls == 1
    clock.advance(31)
    for i in range(200):
        keys.keys_for(f"random-{i}")
    assert provider.calls == 2


def test_failed_fetches_back_off_up_to_the_cooldown(clock: FakeClock) -> None:
    provider = Provider(None)
    keys = cache(provider, clock)
    attempts_at = []
    for _ in range(100):  # one request per simulated second
        before = provider.calls
        with pytest.raises(KeysUnavailable):
            keys.keys_for("rsa-1")
        if provider.calls > before:
            attempts_at.append(clock.now - 1000)
        clock.advance(1)
    assert attempts_at == [0, 1, 3, 7, 15, 31, 61, 91]


def test_one_warning_per_failed_fetch_not_per_request(
    rsa: SigningKey, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    provider = Provider(jwks(rsa))
    keys = cache(provider, clock)
    keys.keys_for("rsa-1")
    provider.document = None
    clock.advance(301)
    with caplog.at_level(logging.WARNING, logger="gw.auth"):
        for _ in range(100):
            assert kids(keys.keys_for("rsa-1")) == ["rsa-1"]  # the last good keys
        assert keys.settle(5)
    [record] = [r for r in caplog.records if r.name == "gw.auth"]
    assert "HTTP 503" in record.getMessage() and "keeping 1 cached key" in record.getMessage()
    assert provider.calls == 2


def test_concurrent_cold_start_fetches_once(rsa: SigningKey, clock: FakeClock) -> None:
    provider = Provider(jwks(rsa), delay=0.2)
    keys = cache(provider, clock)
    results: list[list[str | None]] = []
    threads = [
        threading.Thread(target=lambda: results.append(kids(keys.keys_for("rsa-1"))))
        for _ in range(16)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert provider.calls == 1
    assert results == [["rsa-1"]] * 16


def test_stale_keys_are_served_while_another_thread_refreshes(
    rsa: SigningKey, clock: FakeClock
) -> None:
    provider = Provider(jwks(rsa))
    keys = cache(provider, clock)
    keys.keys_for("rsa-1")
    clock.advance(301)
    provider.gate = threading.Event()
    refresher = threading.Thread(target=keys.keys_for, args=("rsa-1",))
    refresher.start()
    while provider.calls < 2:
        time.sleep(0.005)
    started = time.monotonic()
    assert kids(keys.keys_for("rsa-1")) == ["rsa-1"]  # does not queue behind the fetch
    assert time.monotonic() - started < 1.0  # the fetch itself is held for up to 5 s
    provider.gate.set()
    refresher.join(5)
    assert provider.calls == 2


def test_a_fetcher_bug_is_a_failed_fetch_not_a_crash(clock: FakeClock) -> None:
    def broken(uri: str, timeout: float) -> bytes:
        raise RuntimeError("boom")

    with pytest.raises(KeysUnavailable):
        cache(broken, clock).keys_for("x")  # type: ignore[arg-type]


# -- parsing ----------------------------------------------------------------------------------


def test_parse_indexes_keys_by_kid(rsa: SigningKey, ec: SigningKey, ed: SigningKey) -> None:
    keyset = parse_jwks(json.dumps(jwks(rsa, ec, ed)).encode())
    assert sorted(keyset.by_kid) == ["ec-1", "ed-1", "rsa-1"]
    assert len(keyset) == 3


@pytest.mark.parametrize(
    "body",
    [b"", b"<html>", b"[]", b'{"keys": "x"}', b'{"keys": []}', b'{"nokeys": 1}', b"[" * 100000],
)
def test_garbage_is_not_a_key_set(body: bytes) -> None:
    with pytest.raises(JwksFetchError):
        parse_jwks(body)


def test_symmetric_private_and_encryption_keys_are_ignored(rsa: SigningKey) -> None:
    hostile = [
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        {**rsa.public_jwk, "kid": "enc", "use": "enc"},
        {**rsa.public_jwk, "kid": "private", "d": "AQAB"},
        {**rsa.public_jwk, "kid": "nonealg", "alg": "none"},
        {**rsa.public_jwk, "kid": "hsalg", "alg": "HS256"},
        {**rsa.public_jwk, "kid": 7},
        "not a key",
    ]
    keyset = parse_jwks(json.dumps({"keys": [*hostile, rsa.public_jwk]}).encode())
    assert list(keyset.by_kid) == ["rsa-1"]


def test_rsa_keys_under_2048_bits_are_ignored() -> None:
    weak = rsa_key("weak", bits=1024)
    with pytest.raises(JwksFetchError):
        parse_jwks(json.dumps(jwks(weak)).encode())


def test_keys_fit_only_their_own_algorithm_family(
    rsa: SigningKey, ec: SigningKey, ed: SigningKey
) -> None:
    undeclared = {k: v for k, v in rsa.public_jwk.items() if k != "alg"}
    keyset = parse_jwks(json.dumps({"keys": [undeclared, ec.public_jwk, ed.public_jwk]}).encode())
    [r], [e], [d] = keyset.by_kid["rsa-1"], keyset.by_kid["ec-1"], keyset.by_kid["ed-1"]
    assert r.fits("RS256") and r.fits("PS256") and not r.fits("ES256") and not r.fits("HS256")
    assert e.fits("ES256") and not e.fits("ES384") and not e.fits("RS256")
    assert d.fits("EdDSA") and not d.fits("ES256")


def test_declared_alg_is_binding(rsa: SigningKey) -> None:
    [key] = parse_jwks(json.dumps(jwks(rsa)).encode()).by_kid["rsa-1"]
    assert key.fits("RS256") and not key.fits("PS256")


def test_keys_without_kid_are_candidates_for_any_token(rsa: SigningKey) -> None:
    anonymous = {k: v for k, v in rsa.public_jwk.items() if k != "kid"}
    keyset = parse_jwks(json.dumps({"keys": [anonymous]}).encode())
    assert keyset.knows("whatever") and len(keyset.candidates("whatever")) == 1


def test_the_request_that_finds_the_keys_expired_does_not_wait_for_the_refresh(
    rsa: SigningKey, clock: FakeClock
) -> None:
    """An expired key set is refreshed in the background; the known keys serve meanwhile."""
    provider = Provider(jwks(rsa))
    keys = cache(provider, clock)
    keys.keys_for("rsa-1")
    clock.advance(301)
    provider.gate = threading.Event()  # the refresh is held until the gate opens (5 s at most)
    started = time.monotonic()
    assert kids(keys.keys_for("rsa-1")) == ["rsa-1"]  # the request that started the refresh
    assert time.monotonic() - started < 1.0
    assert not keys.settle(0.05)  # the refresh is still held
    assert provider.calls == 2
    provider.gate.set()
    assert keys.settle(5)
    assert provider.calls == 2


def test_each_ended_fetch_is_told_to_the_observer_once(rsa: SigningKey, clock: FakeClock) -> None:
    told: list[tuple[str, str]] = []
    provider = Provider(None)
    keys = cache(provider, clock, observe=lambda uri, outcome: told.append((uri, outcome)))
    with pytest.raises(KeysUnavailable):
        keys.keys_for("rsa-1")
    clock.advance(31)
    provider.document = jwks(rsa)
    for _ in range(5):
        keys.keys_for("rsa-1")
    assert told == [("https://idp/jwks", "failed"), ("https://idp/jwks", "ok")]
