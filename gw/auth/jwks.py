"""JSON Web Key Sets: fetched over gw's own upstream transport, parsed with PyJWT, cached,
refetched with restraint.

One ``JwksCache`` per key-set URI per process. The first request that needs keys fetches them
(nothing touches the network at construction, so the cache is safe to build before a fork).
The rules that keep an identity provider from being stampeded:

- keys are reused for ``cache_seconds``; after that the next request starts a refresh;
- a token naming an unknown ``kid`` triggers a refetch, but attempts of any kind are at least
  ``cooldown`` seconds apart (after a failure: 1 s, 2 s, 4 s ... up to ``cooldown``), so a
  flood of random kids costs the provider one fetch per cooldown per process;
- fetches run in the background, one at a time per process (a thread; a greenlet under the
  gevent worker, whose monkey-patching turns threads into greenlets). No request waits for a
  refresh while the keys it needs are known: an expired key set keeps serving until the new
  one is in. Only a request that has nothing to use (no key set yet, or a ``kid`` the current
  set does not have) waits for the fetch it started, at most about twice ``timeout``;
- a failed fetch (down, slow, redirect, garbage) keeps the last good keys and logs one warning.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.exceptions import PyJWTError

from gw import __version__
from gw.auth.settings import check_jwks_uri
from gw.upstream.connection import AnswerTooLarge, fetch
from gw.upstream.wire import BodyBrokenOff, MalformedResponse

log = logging.getLogger("gw.auth")

Fetcher = Callable[[str, float], bytes]
"""Return the body of ``GET uri`` within ``timeout`` seconds per phase, or raise JwksFetchError."""

FetchObserver = Callable[[str, bool], None]
"""Told ``(uri, ok)`` when a fetch ends (the gateway's metrics, ``observe_fetches``)."""

MAX_JWKS_BYTES = 512 * 1024
MAX_KEYS = 64
MIN_RSA_BITS = 2048
REFRESH_THREAD = "gw-jwks-refresh"  # the name of the background fetch's thread

# Which JWK may verify which algorithm: (kty, crv or None for any).
_KEY_TYPES: Mapping[str, tuple[str, frozenset[str] | None]] = {
    **{alg: ("RSA", None) for alg in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")},
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
}


_observer: FetchObserver | None = None


def observe_fetches(observer: FetchObserver | None) -> None:
    """Tell ``observer`` how each key-set fetch of this process ends (None: tell no one)."""
    global _observer
    _observer = observer


def _report(uri: str, ok: bool) -> None:
    observer = _observer
    if observer is None:
        return
    try:
        observer(uri, ok)
    except Exception:  # counting a fetch must never fail the fetch
        log.exception("could not count a key-set fetch of %s", uri)


class JwksFetchError(Exception):
    """The key set could not be fetched or was not a usable key set."""


class KeysUnavailable(Exception):
    """No key set has ever been obtained from this URI (so no token can be checked)."""


@dataclass(frozen=True)
class VerificationKey:
    """One public signature key from a key set."""

    kid: str | None
    kty: str
    crv: str | None
    alg: str | None  # as declared by the key set; None when it does not say
    key: Any  # a ``cryptography`` public key object, as PyJWT expects

    def fits(self, alg: str) -> bool:
        """Tell whether this key may verify a signature made with ``alg``.

        APPSEC: a key-set key only ever verifies the asymmetric algorithm family of its own
        ``kty`` and ``crv`` (and its declared ``alg``, if any). Symmetric keys never come from
        a key set at all: that is what defeats a token signed with HS256 using the public key
        as the secret.
        """
        expected = _KEY_TYPES.get(alg)
        if expected is None or (self.alg is not None and self.alg != alg):
            return False
        kty, curves = expected
        return self.kty == kty and (curves is None or self.crv in curves)


@dataclass(frozen=True)
class KeySet:
    """An immutable snapshot of one fetched key set, indexed by ``kid``."""

    by_kid: Mapping[str, tuple[VerificationKey, ...]] = field(default_factory=dict)
    anonymous: tuple[VerificationKey, ...] = ()

    def knows(self, kid: str | None) -> bool:
        """Tell whether a token with this ``kid`` has candidate keys here."""
        return kid is None or kid in self.by_kid or bool(self.anonymous)

    def candidates(self, kid: str | None) -> tuple[VerificationKey, ...]:
        """Return the keys that may have signed a token with this ``kid`` (all, if None)."""
        if kid is None:
            return tuple(k for keys in self.by_kid.values() for k in keys) + self.anonymous
        return self.by_kid.get(kid, ()) + self.anonymous

    def __len__(self) -> int:
        return sum(len(keys) for keys in self.by_kid.values()) + len(self.anonymous)


def parse_jwks(body: bytes) -> KeySet:
    """Parse a JWKS document into a ``KeySet`` of public signature keys.

    Entries that are not usable public signature keys (symmetric, private, encryption-only,
    unknown curve, RSA under 2048 bits) are skipped, as ``jwt.PyJWKSet`` does.

    Raises:
        JwksFetchError: when the document is not a key set with at least one usable key.
    """
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise JwksFetchError("the key set is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksFetchError("the key set is not an object with a 'keys' list")
    keys = [k for e in document["keys"][:MAX_KEYS] if (k := _verification_key(e)) is not None]
    if not keys:
        raise JwksFetchError("the key set has no usable public signature keys")
    return _index(keys)


def _verification_key(entry: Any) -> VerificationKey | None:
    if not _is_public_signing_key(entry):
        return None
    try:
        jwk = jwt.PyJWK.from_dict(entry)
    except (PyJWTError, ValueError, TypeError, NotImplementedError):
        return None  # skipped, as jwt.PyJWKSet skips keys it cannot use
    key = jwk.key
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        return None
    alg, crv = entry.get("alg"), entry.get("crv")
    return VerificationKey(jwk.key_id, entry["kty"], crv, alg, key)


def _is_public_signing_key(entry: Any) -> bool:
    # APPSEC: symmetric ("oct") keys in a public key set are a misconfiguration or an attack,
    # and private key material has no business in one either: both are ignored.
    if not isinstance(entry, dict) or entry.get("kty") not in ("RSA", "EC", "OKP"):
        return False
    if entry.get("use", "sig") != "sig" or "d" in entry:
        return False
    if entry.get("alg") not in (None, *_KEY_TYPES) or not isinstance(entry.get("crv", ""), str):
        return False
    kid = entry.get("kid")
    return kid is None or (isinstance(kid, str) and 0 < len(kid) <= 256)


def _index(keys: list[VerificationKey]) -> KeySet:
    by_kid: dict[str, tuple[VerificationKey, ...]] = {}
    anonymous: list[VerificationKey] = []
    for key in keys:
        if key.kid is None:
            anonymous.append(key)
        else:
            by_kid[key.kid] = (*by_kid.get(key.kid, ()), key)
    return KeySet(by_kid, tuple(anonymous))


_HEADERS = {"Accept": "application/json", "User-Agent": f"gw/{__version__}"}


class HttpFetcher:
    """Fetch key sets over gw's own upstream transport (``gw.upstream.connection.fetch``): a
    connection of its own, no redirects, no retries, bounded time and size."""

    def __init__(self, max_bytes: int = MAX_JWKS_BYTES) -> None:
        self.max_bytes = max_bytes

    def __call__(self, uri: str, timeout: float) -> bytes:
        """Return the body of a 200 answer to ``GET uri``, all of it within twice ``timeout``.

        A fetch every few minutes gains nothing from keep-alive, and reusing a connection
        that the provider is closing at that moment would be a spurious failed fetch: each
        fetch gets its own connection (and nothing is shared across gunicorn's fork).
        """
        check_jwks_uri(uri)
        parts = urlsplit(uri)
        target = f"{parts.path or '/'}?{parts.query}" if parts.query else parts.path or "/"
        try:
            status, body = fetch(uri, target, _HEADERS, None, 2 * timeout, self.max_bytes)
        except AnswerTooLarge:
            raise JwksFetchError(f"the key set is larger than {self.max_bytes} bytes") from None
        except TimeoutError:
            raise JwksFetchError("the key set took too long to arrive") from None
        except (OSError, MalformedResponse, BodyBrokenOff) as ex:
            raise JwksFetchError(f"request failed ({type(ex).__name__})") from None
        if 300 <= status < 400:
            raise JwksFetchError(f"HTTP {status}: redirects are not followed")
        if status != 200:
            raise JwksFetchError(f"HTTP {status}")
        return body


class JwksCache:
    """The keys of one JWKS URI in this process, refreshed with restraint (see module doc)."""

    def __init__(
        self,
        uri: str,
        fetcher: Fetcher,
        *,
        cache_seconds: float = 300.0,
        cooldown: float = 30.0,
        timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.uri = uri
        self._fetcher = fetcher
        self._cache_seconds = cache_seconds
        self._cooldown = cooldown
        self._timeout = timeout
        self._clock = clock
        self._keys: KeySet | None = None
        self._expires = 0.0
        self._next_attempt = 0.0
        self._failures = 0
        self._attempts = 0
        self._lock = threading.Lock()  # guards _running: at most one fetch per process
        self._running: threading.Event | None = None  # set when the fetch in progress ends
        self._running_pid = -1

    @property
    def attempts(self) -> int:
        """How many fetches this cache has started (successful or not)."""
        return self._attempts

    def keys_for(self, kid: str | None) -> tuple[VerificationKey, ...]:
        """Return the candidate keys for a token's ``kid`` (empty when it is unknown).

        Raises:
            KeysUnavailable: when no key set has been obtained from the URI yet.
        """
        keys = self._keys
        if self._wants_fetch(keys, kid):
            done = self._refresh_in_background()
            # PERF: a request whose key is known never waits for a refresh; one that has
            # nothing to verify its token with waits for the fetch (bounded).
            if keys is None or not keys.knows(kid):
                done.wait(2 * self._timeout + 0.5)
                keys = self._keys
        if keys is None:
            raise KeysUnavailable(f"no keys from {self.uri} yet")
        return keys.candidates(kid)

    def settle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a refresh in progress; True when none is left."""
        with self._lock:
            done = self._running if self._running_pid == os.getpid() else None
        return done is None or done.wait(timeout)

    def _wants_fetch(self, keys: KeySet | None, kid: str | None) -> bool:
        now = self._clock()
        if now < self._next_attempt:
            return False
        return keys is None or now >= self._expires or not keys.knows(kid)

    def _refresh_in_background(self) -> threading.Event:
        """Start a fetch unless one is running in this process; return its end as an event."""
        with self._lock:
            # A fetch running in the parent at fork time does not exist in the child.
            if self._running is not None and self._running_pid == os.getpid():
                return self._running
            done = threading.Event()
            if self._clock() < self._next_attempt:  # a fetch just ended: nothing to start
                done.set()
                return done
            self._running, self._running_pid = done, os.getpid()
        worker = threading.Thread(
            target=self._fetch_then_signal, args=(done,), name=REFRESH_THREAD, daemon=True
        )
        try:
            worker.start()
        except RuntimeError as ex:  # no thread to be had: try again on a later request
            log.warning("could not start a key refresh for %s: %s", self.uri, ex)
            self._signal(done)
        return done

    def _fetch_then_signal(self, done: threading.Event) -> None:
        try:
            self._fetch()
        finally:
            self._signal(done)

    def _signal(self, done: threading.Event) -> None:
        with self._lock:
            self._running = None
        done.set()

    def _fetch(self) -> None:
        self._attempts += 1
        try:
            keys = parse_jwks(self._fetcher(self.uri, self._timeout))
        except Exception as ex:  # a failed fetch must never fail a request by itself
            self._failed(ex)
            return
        now = self._clock()
        self._keys, self._failures = keys, 0
        self._expires = now + self._cache_seconds
        self._next_attempt = now + self._cooldown
        log.info("fetched %d key(s) from %s", len(keys), self.uri)
        _report(self.uri, True)

    def _failed(self, ex: Exception) -> None:
        _report(self.uri, False)
        self._failures += 1
        backoff = min(self._cooldown, 2.0 ** (self._failures - 1))
        self._next_attempt = self._clock() + backoff
        kept = len(self._keys) if self._keys is not None else 0
        reason = str(ex) if isinstance(ex, JwksFetchError) else f"{type(ex).__name__}: {ex}"
        log.warning(
            "fetching keys from %s failed: %s; keeping %d cached key(s), next attempt in %gs",
            self.uri,
            reason,
            kept,
            backoff,
        )
