"""Tokens this worker has verified, remembered until they expire: a hit costs a dict lookup.

APPSEC: what makes a remembered token safe to accept again without its signature checked:
- the key is the exact token text the client sent: a change to any byte, the signature
  included, is another key and is verified in full;
- only a token that passed every check (signature, ``exp``, ``nbf``, ``iss``, ``aud``, its
  claims as headers) is remembered; a failure never is, so it is checked again each time;
- each use asks the verifier whether it still trusts the token (``TokenVerifier.trusts``):
  never past its ``exp``, and only while the key that verified it is still offered, so a
  JWKS rotation or removal (and any refresh) sends it through full verification again;
- the route's own rules (issuers, roles, scopes) are applied on every request, hit or not;
- a reload builds a new authenticator, and with it an empty memory;
- the memory is bounded (``CAPACITY`` tokens, each at most ``max_token_bytes``), oldest out
  first, so a flood of valid tokens costs bounded memory and only makes misses.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

CAPACITY = 4096

V = TypeVar("V")


class Remembered(Generic[V]):
    """A bounded map from token text to what its verification produced."""

    def __init__(self, still_good: Callable[[V], bool], capacity: int = CAPACITY) -> None:
        self._still_good = still_good
        self._capacity = capacity
        self._entries: dict[str, V] = {}
        self._lock = threading.Lock()  # writers only: a lookup is one atomic dict.get

    def get(self, token: str) -> V | None:
        """What ``token`` verified to, while the verifier still vouches for it; else None."""
        entry = self._entries.get(token)
        if entry is None or self._still_good(entry):
            return entry
        with self._lock:
            self._entries.pop(token, None)
        return None

    def put(self, token: str, entry: V) -> None:
        """Remember a token that passed every check (never one that failed)."""
        with self._lock:
            if token not in self._entries and len(self._entries) >= self._capacity:
                del self._entries[next(iter(self._entries))]  # the oldest
            self._entries[token] = entry

    def __len__(self) -> int:
        return len(self._entries)
