"""A verified caller: what authentication hands every later stage.

Pure module. ``gw.auth`` builds an ``Identity`` (checking every claim that becomes a header);
rate limits, the cache, composition and the upstream headers read it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

Method = Literal["jwt", "introspection", "api_key"]


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

        The compact JSON array ``["jwt", issuer, subject]`` for a token (a JWT or an
        introspected opaque token) and ``["api_key", consumer]`` for an API key.

        APPSEC: partner ``alice`` and the main IdP's ``alice`` are two callers. JSON quoting
        makes the text unambiguous: no (issuer, subject) pair can be spelled like another,
        whatever characters either holds, and an API key's consumer never reads as a
        token's subject.
        """
        if self.issuer is None:
            return json.dumps([self.method, self.subject], separators=(",", ":"))
        # An issuer's subject is one caller whether its token was a JWT or an opaque token
        # the issuer vouched for by introspection: both are spelled "jwt".
        return json.dumps(["jwt", self.issuer, self.subject], separators=(",", ":"))

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


def _items(value: Any) -> set[str]:
    if isinstance(value, str):
        return {value}
    if isinstance(value, list):
        return {item for item in value if isinstance(item, str)}
    return set()
