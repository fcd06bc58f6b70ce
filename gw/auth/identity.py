"""Who the caller is, once verified, and the identity headers the upstream receives.

Pure module. Upstreams trust ``X-User-Id`` and friends because only the gateway sets them, so
every value built from a claim is checked before it becomes a header: a claim that cannot be
sent safely rejects the credential instead of being dropped or mangled.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from gw.core.headers import canonical_name
from gw.core.identity import Identity, Method

MAX_HEADER_CHARS = 256

# APPSEC: C0 controls (CR, LF, NUL, TAB ...), DEL and C1 controls could split or smuggle a
# header, or read differently downstream; anything outside Latin-1 cannot be sent as-is.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class UnsafeClaim(ValueError):
    """A claim is missing or cannot become a header safely."""

    def __init__(self, claim: str, problem: str, *, reason: str = "unsafe_claim") -> None:
        super().__init__(f"claim {claim!r}: {problem}")
        self.claim = claim
        self.reason = reason


def build_identity(
    claims: Mapping[str, Any],
    *,
    method: Method,
    key_id: str | None,
    claim_headers: Mapping[str, str],
    issuer: str | None = None,
    issuer_header: str | None = None,
) -> Identity:
    """Build an ``Identity`` from verified claims, checking every value that becomes a header.

    ``issuer`` (the verified issuer, already checked as a header value when the configuration
    was loaded) is sent in ``issuer_header`` when both are given.

    Raises:
        UnsafeClaim: when ``sub`` is missing or any mapped claim cannot be a header value.
    """
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise UnsafeClaim("sub", "a subject is required", reason="missing_claim")
    _check_claim("sub", subject)
    role = claims.get("role")
    headers = identity_headers(claims, claim_headers)
    if issuer is not None and issuer_header:
        headers += ((issuer_header, issuer),)
    frozen = MappingProxyType(dict(claims))
    role_text = role if isinstance(role, str) else None
    return Identity(subject, role_text, frozen, method, key_id, issuer, headers)


def identity_headers(
    claims: Mapping[str, Any], claim_headers: Mapping[str, str]
) -> tuple[tuple[str, str], ...]:
    """Return ``(header, value)`` for every mapped claim present in ``claims``.

    Raises:
        UnsafeClaim: naming the first claim that cannot be sent.
    """
    pairs = []
    for claim, header in claim_headers.items():
        value = header_text(claim, claims.get(claim))
        if value is not None:
            pairs.append((header, value))
    return tuple(pairs)


def header_text(claim: str, value: Any) -> str | None:
    """Convert one claim value to header text; None when there is nothing to send."""
    if value is None or value == []:
        return None
    if isinstance(value, list):
        items = [_scalar(claim, item) for item in value]
        if any("," in item for item in items):
            raise UnsafeClaim(claim, "a list item contains ','")
        return _check_claim(claim, ",".join(items))
    return _check_claim(claim, _scalar(claim, value))


def check_header_value(value: str) -> str:
    """Return ``value`` if it may be sent as a header value, else raise ValueError."""
    if not 0 < len(value) <= MAX_HEADER_CHARS:
        raise ValueError(f"must be 1 to {MAX_HEADER_CHARS} characters")
    if _CONTROL.search(value):
        raise ValueError("contains a control character")
    if not value.isascii() and any(ord(c) > 0xFF for c in value):
        raise ValueError("contains characters outside Latin-1")
    if value != value.strip(" "):
        raise ValueError("starts or ends with a space")
    return value


def owned_header_names(claim_headers: Mapping[str, str], *others: str) -> frozenset[str]:
    """Return the identity header names (the claims' and ``others``) in comparison form."""
    return frozenset(canonical_name(h) for h in (*claim_headers.values(), *others))


def _scalar(claim: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        return str(value)
    if isinstance(value, str):
        return value
    raise UnsafeClaim(claim, f"a {type(value).__name__} cannot be sent as a header")


def _check_claim(claim: str, value: str) -> str:
    try:
        return check_header_value(value)
    except ValueError as ex:
        raise UnsafeClaim(claim, str(ex)) from None
