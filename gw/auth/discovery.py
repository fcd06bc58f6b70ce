"""OpenID Connect Discovery: an issuer's key-set URI read from its published metadata.

An issuer written with ``discovery: true`` (and no ``jwks_uri``) has its keys fetched in two
steps: ``GET {issuer}/.well-known/openid-configuration``, then ``GET`` the ``jwks_uri`` that
document names. Both steps run inside one ``JwksCache`` fetch (its "URI" is the discovery
document's), so discovery inherits everything the key-set fetch does: nothing at
construction, the same timeout per step, no redirects, bounded size, background refreshes,
backoff, and the last good keys kept while the provider is down or says something wrong.
"""

from __future__ import annotations

import json
from typing import Any

from gw.auth.jwks import Fetcher, JwksFetchError
from gw.auth.settings import check_jwks_uri

MAX_DOCUMENT_BYTES = 64 * 1024


class DiscoveringFetcher:
    """A ``Fetcher`` for a discovery document's URI that returns the key set it points to."""

    def __init__(self, issuer: str, fetcher: Fetcher) -> None:
        self.issuer = issuer
        self._fetcher = fetcher
        self.jwks_uri: str | None = None  # the last one discovered (for logs and tests)

    def __call__(self, uri: str, timeout: float) -> bytes:
        """Fetch the discovery document at ``uri``, then the key set it names.

        Raises:
            JwksFetchError: either step failed, or the document is not the issuer's own.
        """
        document = _document(self._fetcher(uri, timeout))
        self.jwks_uri = jwks_uri_of(document, self.issuer)
        return self._fetcher(self.jwks_uri, timeout)


def jwks_uri_of(document: dict[str, Any], issuer: str) -> str:
    """Return the document's ``jwks_uri`` after checking the document speaks for ``issuer``.

    APPSEC: OpenID Connect Discovery 1.0 section 4.3: the ``issuer`` in the document must be
    exactly the configured issuer (no normalisation, no trailing-slash leniency). Otherwise
    a document served under the issuer's URL (a shared host, a misrouted proxy, a tenant of
    a multi-tenant IdP) could hand us another issuer's keys, and tokens that issuer signed
    would pass as ours. The ``jwks_uri`` it names must pass the same checks as a written one
    (https://, or http:// on loopback only).
    """
    found = document.get("issuer")
    if found != issuer:
        shown = found[:128] if isinstance(found, str) else type(found).__name__
        raise JwksFetchError(f"the discovery document is for issuer {shown!r}, not {issuer!r}")
    uri = document.get("jwks_uri")
    if not isinstance(uri, str):
        raise JwksFetchError("the discovery document has no jwks_uri")
    try:
        return check_jwks_uri(uri)
    except ValueError as ex:
        raise JwksFetchError(f"the discovered jwks_uri is refused: {ex}") from None


def _document(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_DOCUMENT_BYTES:
        raise JwksFetchError(f"the discovery document is larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise JwksFetchError("the discovery document is not JSON") from None
    if not isinstance(document, dict):
        raise JwksFetchError("the discovery document is not a JSON object")
    return document
