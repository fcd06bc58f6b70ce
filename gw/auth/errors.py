"""The answers authentication can end a request with: 401, 403, 429 for an address that failed
too often, and 503 when keys are missing.

Pure module. Each error carries a ``reason`` (a fine-grained, stable code for the audit log and
tests, such as ``expired`` or ``unknown_kid``) besides the client-facing ``code``, and a
``detail`` mapping of what is known about the credential (``kid``, ``iss``), never the
credential itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gw.errors import ClientError, GatewayError, Unauthorized, challenge


class InvalidToken(Unauthorized):
    """A credential was presented but is not acceptable (401, ``error="invalid_token"``).

    ``signed`` is True when the token's signature verified and it was refused only for what
    it says (expired, not yet valid, another audience, a claim that cannot be forwarded):
    such a token was issued by the identity provider, so it cannot be a guess.
    """

    code = "invalid_token"
    challenge_error = "invalid_token"

    def __init__(
        self,
        message: str = "authentication is required",
        *,
        reason: str = "missing_credential",
        detail: Mapping[str, Any] | None = None,
        signed: bool = False,
    ) -> None:
        super().__init__(message, reason=reason, detail=detail)
        self.signed = signed


class Forbidden(ClientError):
    """The caller is known but lacks a role or scope the route requires (403)."""

    status = 403
    code = "forbidden"

    def __init__(
        self,
        message: str,
        *,
        reason: str = "insufficient_scope",
        scopes: Sequence[str] = (),
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        header = challenge("insufficient_scope", message, scopes)
        super().__init__(message, headers={"WWW-Authenticate": header})
        self.reason = reason
        self.detail = dict(detail or {})


class IssuerNotAccepted(Forbidden):
    """The caller's credential is valid but comes from an issuer the route does not accept."""

    code = "issuer_not_accepted"


class TooManyAuthFailures(ClientError):
    """The client's address failed to authenticate too often; wait ``retry_after`` (429)."""

    status = 429
    code = "too_many_auth_failures"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"too many failed authentications from this address; retry after {retry_after} seconds",
            headers={"Retry-After": str(retry_after)},
            extra={"retry_after": retry_after},
        )


class AuthUnavailable(GatewayError):
    """No verification keys could be obtained from the identity provider yet (503)."""

    status = 503
    code = "auth_unavailable"

    def __init__(
        self,
        message: str = "the identity provider's keys are not available; try again shortly",
        *,
        retry_after: int = 5,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})
        self.reason = "keys_unavailable"
        self.detail = dict(detail or {})


class IntrospectionUnavailable(AuthUnavailable):
    """The introspection endpoint gave no usable answer (down, slow, refused us, garbage): 503.

    APPSEC: never read as "active" (that would let any string in while the provider is down)
    nor as "inactive" (that would log honest callers out and count them as guessers).
    """

    code = "introspection_unavailable"

    def __init__(self, reason: str, detail: Mapping[str, Any] | None = None) -> None:
        super().__init__(
            "the identity provider could not check the token; try again shortly",
            retry_after=2,
            detail=detail,
        )
        self.reason = reason
