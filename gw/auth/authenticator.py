"""The authenticate stage: one object per process that turns request credentials into an
``Identity`` (or an error), following each route's policy.

Build once, serve many: the ``Authenticator`` is built from the settings when the config is
loaded (no network at construction; keys are fetched on first use) and shared by every thread
of the worker.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from types import MappingProxyType
from typing import Any, Protocol

from gw.auth.apikeys import ApiKeyStore
from gw.auth.errors import (
    AuthUnavailable,
    Forbidden,
    InvalidToken,
    IssuerNotAccepted,
)
from gw.auth.identity import UnsafeClaim, build_identity, owned_header_names
from gw.auth.introspection import (
    IntrospectionMetrics,
    Introspector,
    looks_like_jwt,
    read_client_secret,
)
from gw.auth.jwks import Fetcher, HttpFetcher
from gw.auth.remembered import Remembered
from gw.auth.settings import API_KEY_SOURCE, AuthSettings, RoutePolicy
from gw.auth.tokens import MESSAGES, TokenVerifier, VerifiedToken
from gw.core.headers import canonical_name, values_of
from gw.core.identity import Identity
from gw.errors import Unauthorized

audit_log = logging.getLogger("gw.audit")

DEFAULT_POLICY = RoutePolicy()
_AUTHORIZATION = "authorization"


class Authenticator:
    """Authenticate requests against the ``auth:`` settings."""

    def __init__(
        self,
        settings: AuthSettings,
        *,
        fetcher: Fetcher | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Compile the settings (reads the API key file; never touches the network).

        Raises:
            ConfigError: when the API key file cannot be read or holds an invalid entry.
        """
        self.settings = settings
        self._reporter = _Reporter()
        self._verifier = None
        if any(i.verifies_jwts for i in settings.all_issuers()):
            self._verifier = TokenVerifier.from_settings(
                settings, fetcher or HttpFetcher(), clock, self._reporter.jwks_fetch
            )
        self._introspector = _introspector(settings, clock)
        self._takes_bearer = self._verifier is not None or self._introspector is not None
        self._api_keys = ApiKeyStore.from_settings(settings.api_keys) if settings.api_keys else None
        self._key_header = canonical_name(settings.api_keys.header) if settings.api_keys else ""
        self._claim_headers = MappingProxyType(dict(settings.claim_headers))
        self._issuer_header = settings.issuer_header
        self._sources = MappingProxyType({i.issuer: i.ref for i in settings.all_issuers()})
        self._exact = frozenset(p for p in settings.exclude_paths if not p.endswith("/**"))
        self._prefixes = tuple(p[:-3] for p in settings.exclude_paths if p.endswith("/**"))
        self._remembered: Remembered[tuple[VerifiedToken, Identity]] = Remembered(self._trusts)

    def authenticate(
        self,
        path: str,
        headers: Sequence[tuple[str, str]],
        policy: RoutePolicy = DEFAULT_POLICY,
        *,
        client: str | None = None,
        request_id: str | None = None,
    ) -> Identity | None:
        """Return the caller's identity, or None where the route does not need one.

        ``path`` must be the canonical path. Excluded paths and ``mode: none`` return None
        without looking at credentials; ``optional`` returns None when no credential was sent
        but still rejects a bad one. ``shadow`` decides as ``required`` does but leaves the
        audit line to its caller (``gw.auth.stage``, sampled), which never lets it refuse.
        ``client`` and ``request_id`` only go to the audit log.

        Raises:
            Unauthorized: no credential where one is required (``InvalidToken`` for a bad one).
            Forbidden: the caller lacks a role or scope the policy requires.
            AuthUnavailable: the identity provider's keys could not be obtained yet.
        """
        if not self.applies(path, policy):
            return None
        return self.check_credentials(path, headers, policy, client, request_id)

    def check_credentials(
        self,
        path: str,
        headers: Sequence[tuple[str, str]],
        policy: RoutePolicy,
        client: str | None = None,
        request_id: str | None = None,
    ) -> Identity | None:
        """``authenticate`` for a path and policy it ``applies`` to (the caller asked)."""
        mode = policy.effective_mode
        try:
            identity = self._identify(headers, policy)
            if identity is None:
                if mode == "optional":
                    return None
                raise Unauthorized(self._missing_message())
            # PERF: a route that names no issuer, role or scope asks nothing more of the caller
            # (``_authorize`` would find nothing to refuse); an empty roles mapping still goes.
            if policy.issuers is not None or policy.roles != [] or policy.scopes:
                _authorize(identity, policy, self._source(identity))
            return identity
        except (Unauthorized, Forbidden, AuthUnavailable) as ex:
            if mode != "shadow":
                _audit(ex, path, client, request_id)
            raise

    def applies(self, path: str, policy: RoutePolicy = DEFAULT_POLICY) -> bool:
        """Tell whether ``authenticate`` would look at credentials for this path and policy.

        False for ``mode: none`` and for excluded paths (``path`` must be canonical).
        """
        if policy.effective_mode == "none" or path in self._exact:
            return False
        return not self._prefixes or not self.is_excluded(path)

    def is_excluded(self, path: str) -> bool:
        """Tell whether the canonical ``path`` is listed in ``exclude_paths``."""
        if path in self._exact:
            return True
        prefixes = self._prefixes  # PERF: most configs have none: no generator to run
        return bool(prefixes) and any(path == p or path.startswith(p + "/") for p in prefixes)

    def header_names(self) -> frozenset[str]:
        """Return the identity header names the gateway sets, in comparison form.

        Warning:
            The pipeline must drop every client-sent copy of these (in every spelling, see
            ``gw.core.headers.canonical_name``) on every route, authenticated or not.
        """
        return owned_header_names(self._claim_headers, self._issuer_header)

    def report_to(self, metrics: AuthMetrics) -> None:
        """Count introspection calls and key fetches in ``metrics`` (this worker's)."""
        self._reporter.target = metrics
        if self._introspector is not None:
            self._introspector.metrics = metrics

    def _source(self, identity: Identity) -> str:
        """Return the name route policies know the caller's issuer by (``api_key`` for keys)."""
        if identity.method == "api_key" or identity.issuer is None:
            return API_KEY_SOURCE
        return self._sources[identity.issuer]

    # -- credentials ------------------------------------------------------------------------

    def _identify(self, headers: Sequence[tuple[str, str]], policy: RoutePolicy) -> Identity | None:
        token = self._bearer(headers) if self._takes_bearer else None
        key = self._presented_key(headers) if self._api_keys is not None else None
        if token is not None and key is not None:
            # APPSEC: two credentials could name two callers; refuse rather than pick one.
            raise InvalidToken(
                "send either a bearer token or an API key, not both",
                reason="ambiguous_credentials",
            )
        if token is not None:
            return self._from_token(token, policy)
        if key is not None:
            return self._from_api_key(key)
        return None

    def _bearer(self, headers: Sequence[tuple[str, str]]) -> str | None:
        value = _single(headers, _AUTHORIZATION, "the Authorization header")
        if value is None:
            return None
        scheme, _, token = value.strip(" \t").partition(" ")
        token = token.strip(" \t")
        # PERF: str.split() splits on exactly what str.isspace() calls whitespace, in C.
        if scheme.lower() != "bearer" or token.split() != [token]:
            raise InvalidToken(
                "the Authorization header must be 'Bearer <token>'", reason="not_bearer"
            )
        return token

    def _presented_key(self, headers: Sequence[tuple[str, str]]) -> str | None:
        value = _single(headers, self._key_header, "the API key header")
        return None if value is None else value.strip(" \t")

    def _from_token(self, token: str, policy: RoutePolicy) -> Identity:
        introspector = self._introspector
        if introspector is not None and not looks_like_jwt(token):
            return self._introspect(introspector, token, policy)
        if self._verifier is None:
            detail = {"credential": "jwt"}
            raise InvalidToken(MESSAGES["unknown_issuer"], reason="unknown_issuer", detail=detail)
        # PERF: a token seen before is one dict lookup and two checks (gw.auth.remembered
        # says why that is safe); verifying an RS256 token costs tens of microseconds.
        remembered = self._remembered.get(token)
        if remembered is not None:
            return remembered[1]
        entry = self._verify(token)
        self._remembered.put(token, entry)
        return entry[1]

    def _introspect(self, introspector: Introspector, token: str, policy: RoutePolicy) -> Identity:
        # APPSEC: a route that accepts none of the introspecting issuer's callers never
        # calls the provider: an opaque token cannot stand in for the JWT such a route asks
        # for, and cannot be used to make the gateway flood the provider through it.
        accepted = policy.accepted_sources()
        if accepted is not None and introspector.ref not in accepted:
            detail = {"iss": introspector.issuer, "credential": "introspection"}
            message = "this route accepts only tokens it can verify itself (JWTs)"
            raise InvalidToken(message, reason="opaque_not_accepted", detail=detail)
        if len(token) > self.settings.max_token_bytes:
            raise InvalidToken(MESSAGES["token_too_large"], reason="token_too_large")
        return introspector.identify(token)

    def _trusts(self, entry: tuple[VerifiedToken, Identity]) -> bool:
        return self._verifier is not None and self._verifier.trusts(entry[0])

    def _verify(self, token: str) -> tuple[VerifiedToken, Identity]:
        assert self._verifier is not None
        verified = self._verifier.verify(token)
        detail: dict[str, Any] = {"kid": verified.kid, "iss": verified.issuer, "credential": "jwt"}
        try:
            identity = build_identity(
                verified.claims,
                method="jwt",
                key_id=verified.kid,
                claim_headers=self._claim_headers,
                issuer=verified.issuer,
                issuer_header=self._issuer_header,
            )
        except UnsafeClaim as ex:
            message = MESSAGES[ex.reason]
            detail["claim"] = ex.claim
            raise InvalidToken(message, reason=ex.reason, detail=detail, signed=True) from None
        return verified, identity

    def _from_api_key(self, presented: str) -> Identity:
        assert self._api_keys is not None
        key = self._api_keys.lookup(presented)
        if key is None:
            detail = {"credential": "api_key"}
            raise InvalidToken("the API key is not valid", reason="unknown_api_key", detail=detail)
        claims: dict[str, Any] = {"sub": key.consumer}
        if key.role is not None:
            claims["role"] = key.role
        return build_identity(
            claims, method="api_key", key_id=key.id, claim_headers=self._claim_headers
        )

    def _missing_message(self) -> str:
        if self._takes_bearer and self._api_keys is not None:
            return "authentication is required: send a bearer token or an API key"
        if self._api_keys is not None:
            return "authentication is required: send an API key"
        return "authentication is required: send a bearer token"


class AuthMetrics(IntrospectionMetrics, Protocol):
    """What authentication reports (``gw.observe.instruments.Metrics`` has these)."""

    def jwks_fetch(self, uri: str, outcome: str) -> None: ...


class _Reporter:
    """Hands key-fetch outcomes to this worker's metrics, once the pipeline has named them."""

    def __init__(self) -> None:
        self.target: AuthMetrics | None = None

    def jwks_fetch(self, uri: str, outcome: str) -> None:
        if self.target is not None:
            self.target.jwks_fetch(uri, outcome)


def _introspector(settings: AuthSettings, clock: Callable[[], float]) -> Introspector | None:
    """Build the introspector of the one issuer with an ``introspection`` block, if any.

    Raises:
        ConfigError: the client secret cannot be read.
    """
    for index, entry in enumerate(settings.all_issuers()):
        if entry.introspection is None:
            continue
        where = f"issuers[{index}].introspection"
        return Introspector(
            entry.introspection,
            issuer=entry.issuer,
            ref=entry.ref,
            secret=read_client_secret(entry.introspection, where),
            audiences=tuple(entry.audiences or ()),
            claim_headers=MappingProxyType(dict(settings.claim_headers)),
            issuer_header=settings.issuer_header,
            leeway=settings.leeway,
            clock=clock,
        )
    return None


def _single(headers: Sequence[tuple[str, str]], name: str, what: str) -> str | None:
    """Return the one value of header ``name``, None if absent; refuse duplicates."""
    values = values_of(headers, name)  # every spelling (``name`` is ASCII: a token)
    if not values:
        return None
    # APPSEC: gunicorn joins repeated headers with ',' and neither a JWT nor our keys contain
    # one, so a comma means two credentials; which one a server reads is not ours to guess.
    if len(values) > 1 or "," in values[0]:
        raise InvalidToken(f"{what} was sent more than once", reason="duplicate_credentials")
    return values[0]


def _authorize(identity: Identity, policy: RoutePolicy, source: str) -> None:
    # PERF: the caller's scopes are read, and the audit detail made, only when needed.
    accepted = policy.accepted_sources()
    if accepted is not None and source not in accepted:
        message = "this route does not accept credentials from this issuer"
        raise IssuerNotAccepted(message, reason="issuer_not_accepted", detail=_detail(identity))
    roles = policy.roles_for(source)
    if roles and not identity.roles.intersection(roles):
        message = "this route requires a role the caller does not have"
        raise Forbidden(message, reason="insufficient_role", detail=_detail(identity))
    if policy.scopes and not identity.scopes.issuperset(policy.scopes):
        message = "the credential lacks a scope this route requires"
        detail = _detail(identity)
        raise Forbidden(message, reason="insufficient_scope", scopes=policy.scopes, detail=detail)


def _detail(identity: Identity) -> dict[str, Any]:
    """What the audit line says of a caller that was refused."""
    return {
        "subject": identity.subject,
        "iss": identity.issuer,
        "kid": identity.key_id,
        "credential": identity.method,
    }


def _audit(
    ex: Unauthorized | Forbidden | AuthUnavailable,
    path: str,
    client: str | None,
    request_id: str | None,
) -> None:
    """Log one JSON line per failure: never the token or the key, only what names them."""
    line: dict[str, Any] = {
        "event": "auth_failure",
        "status": ex.status,
        "code": ex.code,
        "reason": ex.reason,
        "path": path[:512],
        "client": client,
        "request_id": request_id,
    }
    line.update((k, v) for k, v in ex.detail.items() if v is not None)
    audit_log.warning(json.dumps(line, separators=(",", ":"), ensure_ascii=True))
