"""CORS at the edge: preflights answered by the gateway, allowed origins echoed on responses.

Pure module (its ``cors:`` model is in ``gw.cors.settings``). Compiled once from ``cors:``
(global) and a route's ``cors:`` (which replaces the global one for that route).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gw.core.headers import Headers
from gw.core.request import Request
from gw.errors import ClientError

if TYPE_CHECKING:
    from gw.cors.settings import CorsSettings

_SIMPLE_HEADERS = frozenset({"accept", "accept-language", "content-language", "content-type"})


@dataclass(frozen=True)
class CorsPolicy:
    """One compiled CORS policy."""

    origins: frozenset[str]
    any_origin: bool
    methods: str
    allowed_methods: frozenset[str]
    headers: frozenset[str]
    any_header: bool
    expose: str
    credentials: bool
    max_age: int

    @classmethod
    def compile(cls, settings: CorsSettings) -> CorsPolicy:
        """Build the policy.

        Raises:
            ValueError: credentials with '*' or 'null' (``CorsSettings`` refuses them at load;
                this guards settings built without validation).
        """
        if settings.allow_credentials and {"*", "null"} & set(settings.allowed_origins):
            raise ValueError("allow_credentials with '*' or 'null' origins: list the origins")
        methods = [m.upper() for m in settings.allowed_methods]
        return cls(
            origins=frozenset(o.rstrip("/").lower() for o in settings.allowed_origins),
            any_origin="*" in settings.allowed_origins,
            methods=", ".join(methods),
            allowed_methods=frozenset(methods),
            headers=frozenset(h.lower() for h in settings.allowed_headers),
            any_header="*" in settings.allowed_headers,
            expose=", ".join(settings.expose_headers),
            credentials=settings.allow_credentials,
            max_age=settings.max_age,
        )

    def allows(self, origin: str) -> bool:
        """Whether ``origin`` may read answers; ``null`` only when listed literally.

        With ``*`` (never combined with credentials) every origin, ``null`` included, gets
        ``*``, never an echo of itself.
        """
        return self.any_origin or origin.rstrip("/").lower() in self.origins

    def preflight(self, origin: str, method: str, request_headers: str) -> list[tuple[str, str]]:
        """Headers of the gateway's answer to a preflight; none when it is not allowed."""
        wanted = {h.strip().lower() for h in request_headers.split(",") if h.strip()}
        if not self.allows(origin) or method.upper() not in self.allowed_methods:
            return []
        if not self.any_header and not wanted <= (self.headers | _SIMPLE_HEADERS):
            return []
        headers = self._origin_headers(origin)
        headers += [
            ("Access-Control-Allow-Methods", self.methods),
            ("Access-Control-Max-Age", str(self.max_age)),
        ]
        if wanted:
            headers.append(("Access-Control-Allow-Headers", ", ".join(sorted(wanted))))
        return headers

    def response_headers(self, origin: str | None) -> list[tuple[str, str]]:
        """Headers added to an actual response for a cross-origin request."""
        if not origin or not self.allows(origin):
            return [("Vary", "Origin")] if not self.any_origin or self.credentials else []
        headers = self._origin_headers(origin)
        if self.expose:
            headers.append(("Access-Control-Expose-Headers", self.expose))
        return headers

    def _origin_headers(self, origin: str) -> list[tuple[str, str]]:
        # APPSEC: with credentials the origin is echoed, never '*' (browsers refuse '*' with
        # credentials, and reflecting any origin with credentials would hand every site the
        # user's session); without credentials '*' is used only when configured.
        if self.any_origin and not self.credentials:
            return [("Access-Control-Allow-Origin", "*")]
        headers = [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]
        if self.credentials:
            headers.append(("Access-Control-Allow-Credentials", "true"))
        return headers


def is_preflight(method: str, headers: Headers) -> bool:
    """Whether a request is a CORS preflight: OPTIONS with Origin and the requested method."""
    return (
        method == "OPTIONS" and "Origin" in headers and "Access-Control-Request-Method" in headers
    )


class CorsRefused(ClientError):
    status = 403
    code = "cors_refused"


def apply(policy: CorsPolicy, request: Request) -> list[tuple[str, str]] | None:
    """The CORS stage: for a preflight, the headers of gw's own 204 answer (``CorsRefused``
    when the policy refuses it); for an actual request, mark the response's CORS headers on
    the exchange and return None (the request goes on)."""
    headers = request.headers
    origin = headers.get("Origin")
    if not is_preflight(request.method, headers):
        request.exchange.add_headers += policy.response_headers(origin)
        return None
    allowed = policy.preflight(
        origin or "",
        headers.get("Access-Control-Request-Method") or "",
        headers.get("Access-Control-Request-Headers") or "",
    )
    if not allowed:
        raise CorsRefused("this cross-origin request is not allowed by the route's CORS policy")
    return allowed
