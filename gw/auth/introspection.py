"""Opaque bearer tokens checked with the identity provider (OAuth 2.0 Token Introspection,
RFC 7662), and the answers remembered briefly.

The gateway POSTs ``token=...&token_type_hint=access_token`` to the issuer's introspection
endpoint, authenticated as an OAuth client (``client_secret_basic`` or
``client_secret_post``, RFC 6749 section 2.3.1), on a connection of its own through gw's
upstream transport (no redirects, bounded time and size). The answer decides:

- ``"active": true``: the caller is the answer's ``sub`` (or ``subject_claim``), once the
  gateway has checked ``exp``, ``nbf``, ``iss`` and ``aud`` itself; the answer's members go
  through the same claim-to-header mapping as a JWT's claims;
- ``"active": false``: 401 ``invalid_token``, as for a bad JWT;
- anything else (down, slow, a non-200 status, not JSON, ``active`` not a boolean): 503
  ``introspection_unavailable``, never either of the above.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote_plus, urlencode, urlsplit

from gw import __version__
from gw.auth.errors import IntrospectionUnavailable, InvalidToken
from gw.auth.identity import UnsafeClaim, build_identity
from gw.auth.settings import IntrospectionSettings
from gw.auth.tokens import MESSAGES
from gw.core.identity import Identity
from gw.errors import ConfigError
from gw.upstream.connection import AnswerTooLarge, fetch
from gw.upstream.wire import BodyBrokenOff, MalformedResponse

MAX_ANSWER_BYTES = 64 * 1024
# RFC 6750 section 2.1 b64token: what a bearer token may be made of.
_B64TOKEN = re.compile(r"[A-Za-z0-9._~+/-]+=*")
_NUMERIC_DATES = ("exp", "nbf", "iat")


def looks_like_jwt(token: str) -> bool:
    """Tell whether ``token`` has a JWS compact serialization's shape: three dot-separated parts.

    APPSEC: this alone routes a bearer token. A JWT-shaped token is always verified as a JWT
    and never sent to introspection, so a forged or broken JWT cannot be "rescued" by another
    path, and a route's issuers still decide whether an introspected caller is accepted.
    """
    return token.count(".") == 2


class IntrospectionMetrics(Protocol):
    """What the introspector reports (``gw.observe.instruments.Metrics`` has these)."""

    def introspection(self, issuer: str, outcome: str, seconds: float) -> None: ...

    def introspection_cache_hit(self, issuer: str, answer: str) -> None: ...


@dataclass(frozen=True)
class _Entry:
    """One remembered answer: an identity, or the reason it was refused, until ``until``."""

    until: float  # on the monotonic clock
    expires: float | None  # the token's ``exp`` (wall clock), for an active answer
    identity: Identity | None = None
    reason: str = ""


class AnswerCache:
    """Answers keyed by the SHA-256 of the token, bounded, oldest out first.

    APPSEC: the key is a digest, so the memory holds no usable token; an active answer is
    never reused past the token's ``exp`` nor ``max_ttl``, an inactive one only for
    ``negative_ttl``; "unavailable" is never remembered. Each worker has its own memory and
    a reload starts empty, so a revoked token lives at most ``max_ttl`` past its revocation.
    """

    def __init__(
        self,
        capacity: int,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._capacity = capacity
        self._clock = clock
        self._wall = wall
        self._entries: dict[bytes, _Entry] = {}
        self._lock = threading.Lock()  # writers only: a lookup is one atomic dict.get

    def get(self, digest: bytes) -> _Entry | None:
        """Return the answer remembered for ``digest`` while it is still good, else None."""
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if self._clock() < entry.until and (entry.expires is None or self._wall() < entry.expires):
            return entry
        with self._lock:
            self._entries.pop(digest, None)
        return None

    def put(self, digest: bytes, entry: _Entry) -> None:
        """Remember ``entry`` (no-op with capacity 0)."""
        if self._capacity <= 0:
            return
        with self._lock:
            self._entries.pop(digest, None)
            while len(self._entries) >= self._capacity:
                del self._entries[next(iter(self._entries))]  # the oldest
            self._entries[digest] = entry

    def __len__(self) -> int:
        return len(self._entries)


def read_client_secret(settings: IntrospectionSettings, where: str) -> str:
    """Return the client secret from the environment variable or file the settings name.

    Raises:
        ConfigError: the variable is unset or empty, or the file cannot be read or is empty.
    """
    if settings.client_secret_env is not None:
        name = settings.client_secret_env
        secret = os.environ.get(name, "").strip()
        if not secret:
            raise ConfigError(
                [f"{where}.client_secret_env: environment variable {name} is not set"]
            )
        return secret
    assert settings.client_secret_file is not None  # one of the two (checked by the settings)
    path = settings.client_secret_file
    try:
        with open(path, encoding="utf-8") as file:
            secret = file.read(4096).strip()
    except (OSError, UnicodeDecodeError) as ex:
        problem = getattr(ex, "strerror", None) or type(ex).__name__
        raise ConfigError([f"{where}.client_secret_file: cannot read {path} ({problem})"]) from None
    if not secret:
        raise ConfigError([f"{where}.client_secret_file: {path} is empty"])
    return secret


class Introspector:
    """Ask one issuer's introspection endpoint about opaque tokens, remembering the answers."""

    def __init__(
        self,
        settings: IntrospectionSettings,
        *,
        issuer: str,
        ref: str,
        secret: str,
        audiences: tuple[str, ...],
        claim_headers: Mapping[str, str],
        issuer_header: str,
        leeway: int,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.issuer, self.ref = issuer, ref
        self.metrics: IntrospectionMetrics | None = None  # set per worker by report_to
        self._settings = settings
        self._client_secret = secret
        self._audiences = frozenset(audiences)
        self._claim_headers = claim_headers
        self._issuer_header = issuer_header
        self._leeway = leeway
        self._clock, self._wall = clock, wall
        self._cache = AnswerCache(settings.cache.max_entries, clock, wall)
        self._running: dict[bytes, threading.Event] = {}  # tokens being asked about now
        self._lock = threading.Lock()  # guards _running
        parts = urlsplit(settings.endpoint)
        self._target = f"{parts.path or '/'}?{parts.query}" if parts.query else parts.path or "/"

    def identify(self, token: str) -> Identity:
        """Return the caller an opaque ``token`` stands for.

        Raises:
            InvalidToken: the provider says the token is not active, or its answer fails a check.
            IntrospectionUnavailable: the provider gave no usable answer.
        """
        if not _B64TOKEN.fullmatch(token):
            raise self._refused("malformed", signed=False)
        digest = hashlib.sha256(token.encode()).digest()
        entry = self._cache.get(digest)
        if entry is None:
            return self._first(token, digest)
        return self._remembered(entry)

    def _remembered(self, entry: _Entry) -> Identity:
        self._hit("active" if entry.identity is not None else "inactive")
        if entry.identity is not None:
            return entry.identity
        raise self._refused(entry.reason, cached=True)

    def _first(self, token: str, digest: bytes) -> Identity:
        """Ask about a token not in the cache; requests that ask meanwhile wait for the answer.

        PERF: a client firing ten requests with a fresh token costs the provider one call: the
        others wait (at most ``timeout``) and read the cache. When nothing was remembered (the
        call failed, or the cache is off) each asks for itself.
        """
        with self._lock:
            running = self._running.get(digest)
            if running is None:
                done = self._running[digest] = threading.Event()
        if running is not None:
            running.wait(self._settings.timeout + 0.5)
            entry = self._cache.get(digest)
            return self._remembered(entry) if entry is not None else self._introspect(token, digest)
        try:
            return self._introspect(token, digest)
        finally:
            with self._lock:
                del self._running[digest]
            done.set()

    def _introspect(self, token: str, digest: bytes) -> Identity:
        answer = self._ask(token)
        try:
            identity = self._accept(answer)
        except InvalidToken as ex:
            if self._settings.cache.negative_ttl > 0:
                until = self._clock() + self._settings.cache.negative_ttl
                self._cache.put(digest, _Entry(until, None, reason=ex.reason))
            raise
        self._cache.put(digest, self._positive(identity, answer.get("exp")))
        return identity

    # -- the call --------------------------------------------------------------------------

    def _ask(self, token: str) -> dict[str, Any]:
        """POST the token to the endpoint; return the answer's JSON object.

        APPSEC: every way the call can fail ends in ``IntrospectionUnavailable`` (503): fail
        closed, but without blaming the caller. Failing open would admit any string while the
        provider is down (and an attacker who can slow it down would choose when); "inactive"
        would count honest callers as guessers and cache a wrong answer.
        """
        started = time.monotonic()
        try:
            answer = self._post(token)
        except IntrospectionUnavailable:
            self._count("unavailable", started)
            raise
        self._count("active" if answer["active"] else "inactive", started)
        return answer

    def _post(self, token: str) -> dict[str, Any]:
        form = {"token": token, "token_type_hint": "access_token"}
        headers = {
            "Accept": "application/json",
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": f"gw/{__version__}",
        }
        settings = self._settings
        if settings.auth_method == "client_secret_post":
            form.update(client_id=settings.client_id, client_secret=self._client_secret)
        else:
            pair = f"{quote_plus(settings.client_id)}:{quote_plus(self._client_secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        body = urlencode(form).encode()
        try:
            status, data = fetch(
                settings.endpoint,
                self._target,
                headers,
                None,
                settings.timeout,
                MAX_ANSWER_BYTES,
                method="POST",
                body=body,
            )
        except TimeoutError:
            raise self._unavailable("introspection_timeout") from None
        except AnswerTooLarge:
            raise self._unavailable("introspection_malformed") from None
        except (OSError, MalformedResponse, BodyBrokenOff):
            raise self._unavailable("introspection_unreachable") from None
        if status != 200:
            # A 401 here means the gateway's own client credentials were refused: an operator
            # problem, never the caller's fault, so never a 401 to the caller.
            raise self._unavailable("introspection_status", status=status)
        return self._parse(data)

    def _parse(self, data: bytes) -> dict[str, Any]:
        try:
            answer = json.loads(data)
        except (ValueError, RecursionError):
            raise self._unavailable("introspection_malformed") from None
        # APPSEC: only the JSON boolean true is "active"; "true", 1 or a missing member is an
        # answer we do not understand, so it is neither active nor inactive (RFC 7662 2.2).
        if not isinstance(answer, dict) or not isinstance(answer.get("active"), bool):
            raise self._unavailable("introspection_malformed")
        return answer

    # -- the answer ------------------------------------------------------------------------

    def _accept(self, answer: Mapping[str, Any]) -> Identity:
        """Check an answer as a JWT's claims are checked; return the identity it gives."""
        if answer["active"] is not True:
            raise self._refused("inactive", signed=False)
        # APPSEC: the provider said "active", but the gateway checks what the answer says too:
        # a provider (or a cache along the way) may lag, and another issuer's token must not
        # pass as this one's. Refusals here are of tokens the provider issued (signed=True):
        # they are not guesses, so the failure throttle does not count them.
        for claim in _NUMERIC_DATES:
            if claim in answer and not _is_numeric_date(answer[claim]):
                raise self._refused("invalid_claim")
        now = self._wall()
        if "exp" in answer and now >= answer["exp"] + self._leeway:
            raise self._refused("expired")
        if "nbf" in answer and now + self._leeway < answer["nbf"]:
            raise self._refused("not_yet_valid")
        if "iss" in answer and answer["iss"] != self.issuer:
            raise self._refused("wrong_issuer")
        if self._audiences and not self._audiences.intersection(_audiences(answer.get("aud"))):
            raise self._refused("wrong_audience")
        return self._identity(answer)

    def _identity(self, answer: Mapping[str, Any]) -> Identity:
        subject = answer.get(self._settings.subject_claim)
        if not isinstance(subject, str) or not subject:
            raise self._refused("missing_claim")
        claims = {**answer, "sub": subject}
        try:
            return build_identity(
                claims,
                method="introspection",
                key_id=None,
                claim_headers=self._claim_headers,
                issuer=self.issuer,
                issuer_header=self._issuer_header,
            )
        except UnsafeClaim as ex:
            raise self._refused(ex.reason) from None

    def _positive(self, identity: Identity, exp: Any) -> _Entry:
        until = self._clock() + self._settings.cache.max_ttl
        expires = float(exp) if isinstance(exp, (int, float)) else None
        return _Entry(until, expires, identity)

    # -- errors and metrics ----------------------------------------------------------------

    def _refused(self, reason: str, *, signed: bool = True, cached: bool = False) -> InvalidToken:
        detail: dict[str, Any] = {"iss": self.issuer, "credential": "introspection"}
        if cached:
            detail["cached"] = True
        signed = signed and reason not in ("inactive", "malformed")
        return InvalidToken(MESSAGES[reason], reason=reason, detail=detail, signed=signed)

    def _unavailable(self, reason: str, **detail: Any) -> IntrospectionUnavailable:
        info = {"iss": self.issuer, "credential": "introspection", **detail}
        return IntrospectionUnavailable(reason, detail=info)

    def _count(self, outcome: str, started: float) -> None:
        if self.metrics is not None:
            self.metrics.introspection(self.ref, outcome, time.monotonic() - started)

    def _hit(self, answer: str) -> None:
        if self.metrics is not None:
            self.metrics.introspection_cache_hit(self.ref, answer)


def _audiences(value: Any) -> set[str]:
    if isinstance(value, str):
        return {value}
    if isinstance(value, list):
        return {item for item in value if isinstance(item, str)}
    return set()


def _is_numeric_date(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
