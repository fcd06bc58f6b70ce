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

from gw.errors import ClientError, GatewayError

REALM = "gw"


class Unauthorized(ClientError):
    """No usable credential was presented where one is required (401)."""

    status = 401
    code = "unauthorized"
    challenge_error: str | None = None

    def __init__(
        self,
        message: str = "authentication is required",
        *,
        reason: str = "missing_credential",
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message, headers={"WWW-Authenticate": self._challenge(message)})
        self.reason = reason
        self.detail = dict(detail or {})

    def _challenge(self, message: str) -> str:
        if self.challenge_error is None:
            return f'Bearer realm="{REALM}"'
        return challenge(self.challenge_error, message)


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


def challenge(error: str, description: str, scopes: Sequence[str] = ()) -> str:
    """Build an RFC 6750 ``WWW-Authenticate: Bearer`` challenge with an error."""
    parts = [f'realm="{REALM}"', f'error="{error}"']
    parts.append(f'error_description="{_quoted(description)}"')
    if scopes:
        parts.append(f'scope="{_quoted(" ".join(scopes))}"')
    return "Bearer " + ", ".join(parts)


def _quoted(text: str) -> str:
    # APPSEC: descriptions are the gateway's own fixed sentences, but the value becomes a
    # header, so anything that could end the quoted-string or the header line is dropped.
    return "".join(c for c in text if " " <= c <= "~" and c not in '"\\')[:200]
