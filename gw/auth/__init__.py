"""Identity at the edge: JWT (keys from a JWKS, found by OpenID Connect Discovery, or a shared
secret), opaque tokens by introspection (RFC 7662), API keys, route policies.

The pipeline needs only this package's top level::

    authenticator = Authenticator(settings.auth)           # once per config load
    identity = authenticator.authenticate(path, headers, route_policy, client=ip)
    upstream_headers += identity.headers() if identity else []

and strips ``authenticator.header_names()`` from every client request. Errors are
``Unauthorized`` / ``InvalidToken`` (401), ``Forbidden`` / ``IssuerNotAccepted`` (403) and
``AuthUnavailable`` (503). Key anything per caller by ``identity.principal`` (unique across
issuers), never by ``identity.subject``.
"""

from __future__ import annotations

from gw.auth.apikeys import hash_api_key
from gw.auth.authenticator import DEFAULT_POLICY, Authenticator
from gw.auth.errors import (
    AuthUnavailable,
    Forbidden,
    InvalidToken,
    IssuerNotAccepted,
)
from gw.auth.settings import AuthSettings, RoutePolicy
from gw.core.identity import Identity
from gw.errors import Unauthorized

__all__ = [
    "DEFAULT_POLICY",
    "AuthSettings",
    "AuthUnavailable",
    "Authenticator",
    "Forbidden",
    "Identity",
    "InvalidToken",
    "IssuerNotAccepted",
    "RoutePolicy",
    "Unauthorized",
    "hash_api_key",
]
