"""Who the caller is, once verified, and the identity headers the upstream receives.

Pure module. Upstreams trust ``X-User-Id`` and friends because only the gateway sets them, so
every value built from a claim is checked before it becomes a header: a claim that cannot be
sent safely rejects the credential instead of being dropped or mangled.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any, Literal

from gw.core.headers import canonical_name

MAX_HEADER_CHARS = 256

# APPSEC: C0 controls (CR, LF, NUL, TAB ...), DEL and C1 controls could split or smuggle a
# header, or read differently downstream; anything outside Latin-1 cannot be sent as-is.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

Method = Literal["jwt", "api_key"]


class UnsafeClaim(ValueError):
    """A claim is missing or cannot become a header safely."""

    def __init__(self, claim: str, problem: str, *, reason: str = "unsafe_claim") -> None:
        super().__init__(f"claim {claim!r}: {problem}")
        self.claim = claim
        self.reason = reason


@dataclass(frozen=True)
class Identity:
    """A verified caller.

    ``subject`` is the ``sub`` claim (the consumer for an API key), ``key_id`` the token's
    ``kid`` or the API key's id, ``issuer`` the verified ``iss`` (None for an API key).
    ``headers()`` are the identity headers for the upstream.

    Warning:
        ``subject`` is unique only within its issuer. Key anything per caller (cache
        entries, rate-limit buckets, sessions) by ``principal``, never by ``subject``.
    """

    subject: str
    role: str | None
    claims: Mapping[str, Any]
    method: Method
    key_id: str | None
    issuer: str | None = None
    header_pairs: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    def headers(self) -> list[tuple[str, str]]:
        """Return the identity headers to add to the upstream request (already checked)."""
        return list(self.header_pairs)

    @cached_property
    def principal(self) -> str:
        """Return the caller's name, unique across issuers and credential kinds.

        The compact JSON array ``["jwt", issuer, subject]`` for a token and
        ``["api_key", consumer]`` for an API key.

        APPSEC: partner ``alice`` and the main IdP's ``alice`` are two callers. JSON quoting
        makes the text unambiguous: no (issuer, subject) pair can be spelled like another,
        whatever characters either holds, and an API key's consumer never reads as a
        token's subject.
        """
        if self.issuer is None:
            return json.dumps([self.method, self.subject], separators=(",", ":"))
        return json.dumps([self.method, self.issuer, self.subject], separators=(",", ":"))

    @property
    def roles(self) -> frozenset[str]:
        """Return the caller's roles: the ``role`` and ``roles`` claims (a string or a list)."""
        return frozenset(_items(self.claims.get("role")) | _items(self.claims.get("roles")))

    @property
    def scopes(self) -> frozenset[str]:
        """Return the granted scopes: ``scope`` (space-separated) and ``scp`` (list or string)."""
        found = set()
        for name in ("scope", "scp"):
            value = self.claims.get(name)
            found |= set(value.split()) if isinstance(value, str) else _items(value)
        return frozenset(found)


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


def _items(value: Any) -> set[str]:
    if isinstance(value, str):
        return {value}
    if isinstance(value, list):
        return {item for item in value if isinstance(item, str)}
    return set()
