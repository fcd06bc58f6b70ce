"""Every error the gateway can answer with, under one root.

Pure module: depends on nothing outside the standard library. Each error knows its HTTP
status, a stable machine-readable ``code`` and how to render itself as the one JSON shape
clients see: ``{"error": code, "message": ..., "request_id": ...}``.
"""

from __future__ import annotations

from typing import Any


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


class ConfigError(ValueError):
    """The configuration is invalid; each problem names its exact location."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
