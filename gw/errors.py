"""Every error the gateway can answer with, under one root.

Pure module: depends on nothing outside the standard library. Each error knows its HTTP
status, a stable machine-readable ``code`` and how to render itself as the one JSON shape
clients see: ``{"error": code, "message": ..., "request_id": ...}``. What the edge refuses
before the app sees a request (``gw.edge``) is an ``EdgeError``, rendered the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

# The codes of the answers the edge gives by status alone (a request gunicorn's parser or gw's
# server refuses, a connection a worker sheds). Clients match on them: keep them stable.
EDGE_CODES: Mapping[int, str] = MappingProxyType(
    {
        400: "bad_request",
        403: "forbidden",
        414: "uri_too_long",
        417: "expectation_failed",
        431: "headers_too_large",
        500: "internal_error",
        501: "not_implemented",
        503: "overloaded",
        505: "http_version_not_supported",
    }
)


class GatewayError(Exception):
    """Root of every error that ends a request with a gateway-made response."""

    status = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        self.extra = extra or {}

    def to_dict(self, request_id: str | None = None) -> dict[str, Any]:
        """Return the JSON body for this error."""
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        body.update(self.extra)
        if request_id:
            body["request_id"] = request_id
        return body

    def render(self, request_id: str | None = None) -> bytes:
        """Return the JSON body for this error, encoded: the bytes every error answer carries."""
        return json.dumps(self.to_dict(request_id)).encode()


class EdgeError(GatewayError):
    """A request refused by the edge before the app sees it; its code follows its status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = EDGE_CODES.get(status, "bad_request" if status < 500 else "internal_error")


class ClientError(GatewayError, ValueError):
    """The request itself is unacceptable (4xx)."""

    status = 400
    code = "bad_request"


class InvalidPath(ClientError):
    """The request path cannot be made unambiguous."""

    code = "invalid_path"


class InvalidHeader(ClientError):
    """A request header is malformed."""

    code = "invalid_header"


class BodyTooLarge(ClientError):
    status = 413
    code = "body_too_large"


class UploadTooSlow(ClientError):
    status = 408
    code = "request_timeout"


class IpForbidden(ClientError):
    """The client's address is outside the route's allow list or inside its deny list."""

    status = 403
    code = "ip_forbidden"


class InvalidHost(ClientError):
    """Host is missing (HTTP/1.1), repeated, or not a valid host[:port]."""

    code = "invalid_host"


class UnknownHost(ClientError):
    """The request's host is not one ``server.hosts`` lists."""

    status = 421
    code = "unknown_host"


class InvalidQuery(ClientError):
    """The query string has characters that must be percent-encoded."""

    code = "invalid_query"


class ClientBodyIncomplete(ClientError):
    """The client's body ended before the length it announced."""

    code = "client_body_incomplete"


class UnsupportedCoding(ClientError):
    """A request transfer coding other than ``chunked``."""

    status = 501
    code = "not_implemented"


class RouteNotFound(ClientError):
    status = 404
    code = "route_not_found"


class MethodNotAllowed(ClientError):
    status = 405
    code = "method_not_allowed"

    def __init__(self, method: str, allowed: list[str]) -> None:
        allow = ", ".join(allowed)
        super().__init__(
            f"method {method} is not allowed here (allowed: {allow})",
            headers={"Allow": allow},
        )
        self.allowed = allowed


class IdempotencyKeyMissing(ClientError):
    """A route that requires ``Idempotency-Key`` got a request without one."""

    code = "idempotency_key_missing"


class IdempotencyKeyInvalid(ClientError):
    """``Idempotency-Key`` is not one quoted structured-field string of 1..255 characters."""

    code = "idempotency_key_invalid"


class IdempotencyKeyReused(ClientError):
    """The key was first used with another request (method, target or body)."""

    status = 422
    code = "idempotency_key_reused"


class IdempotencyInFlight(ClientError):
    """The first request with this key is still being answered (waited, then gave up)."""

    status = 409
    code = "idempotency_request_in_flight"


class UpstreamError(GatewayError):
    """The upstream could not produce a usable response (5xx)."""

    status = 502
    code = "upstream_error"


class UpstreamUnavailable(UpstreamError, ConnectionError):
    """Refused, reset or unreachable before a response arrived."""

    code = "upstream_unavailable"


class UpstreamTimeout(UpstreamError, TimeoutError):
    status = 504
    code = "upstream_timeout"


class UpstreamBusy(UpstreamError):
    """The target's ``max_connections`` were all in use and none freed up in time."""

    status = 503
    code = "upstream_busy"


class UpstreamBadResponse(UpstreamError):
    """The upstream answered with something that is not valid HTTP."""

    code = "upstream_bad_response"


class TunnelLimit(GatewayError):
    """This worker has ``tunnels.max_per_worker`` tunnels open; no upstream was contacted."""

    status = 503
    code = "tunnel_limit"


class ConfigError(ValueError):
    """The configuration is invalid; each problem names its exact location."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# -- authentication (raised by gw.auth, and by rate limits that need a caller) ---------------

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
