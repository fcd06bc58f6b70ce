"""The idempotency key, the record it names, and the request's fingerprint.

Pure module (standard library, ``gw.cache.keys`` and ``gw.errors``).
"""

from __future__ import annotations

import hashlib
import json
import re

from gw.cache.keys import CacheKey
from gw.errors import IdempotencyKeyInvalid

KEY_VERSION = 1
MAX_KEY_LENGTH = 255
FINGERPRINT_BYTES = 32
# RFC 8941 sf-string: printable ASCII, with only \" and \\ escaped.
_SF_STRING = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"')
# The bare form many clients send (Stripe's): visible ASCII without quotes, commas, ; or \.
_BARE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]+")
_ESCAPE = re.compile(r"\\([\"\\])")
# Statuses a retry must be able to change: never stored, the next retry reaches the upstream.
# 408/425/429 ask the client to come back; 5xx may be passing (or the upstream may not have
# acted at all). Every other final status is the answer to this key.
RETRYABLE = frozenset({408, 409, 425, 429})


def parse_key(value: str) -> str:
    """Return the key in an ``Idempotency-Key`` header value.

    The value is an RFC 8941 sf-string (``"8e03978e-40d5"``); a bare token without quotes is
    accepted too (what most clients send). No parameters, no list.

    Raises:
        IdempotencyKeyInvalid: the value is neither, or the key is empty or too long.
    """
    text = value.strip(" \t")
    quoted = _SF_STRING.fullmatch(text)
    if quoted is not None:
        key = _ESCAPE.sub(r"\1", quoted.group(1))
    elif _BARE.fullmatch(text):
        key = text
    else:
        raise IdempotencyKeyInvalid(
            'Idempotency-Key must be one quoted string ("...") of printable ASCII'
        )
    if not 0 < len(key) <= MAX_KEY_LENGTH:
        raise IdempotencyKeyInvalid(f"Idempotency-Key must have 1 to {MAX_KEY_LENGTH} characters")
    return key


def record_key(route: str, scope: str, key: str) -> CacheKey:
    """Return the name of the record of ``key`` sent by ``scope`` on ``route``.

    APPSEC: ``scope`` is who sent the key (see ``IdempotencyStage.scope``): one caller's key
    never names another caller's record, so a guessed or leaked key replays nothing across
    callers. A JSON array is unambiguous: no (route, scope, key) can be spelled like another.
    """
    text = json.dumps([KEY_VERSION, route, scope, key], separators=(",", ":"))
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    # The stores group entries by route: a name no cache route can have (the NUL).
    return CacheKey(digest=digest, route="idempotency\0" + route, description=f"{route} (keyed)")


def fingerprint(method: str, path: str, query: str, body: bytes) -> bytes:
    """Return the SHA-256 of what the key promises not to change: method, target, body."""
    head = json.dumps([method, path, query, len(body)], separators=(",", ":"))
    digest = hashlib.sha256(head.encode("utf-8", "surrogatepass"))
    digest.update(b"\n")
    digest.update(body)
    return digest.digest()


def seal(print_: bytes, body: bytes) -> bytes:
    """Return what is stored as the record's body: the request's fingerprint, then the answer."""
    return print_ + body


def unseal(stored: bytes) -> tuple[bytes, bytes]:
    """Split a stored body into (fingerprint, answer body)."""
    return stored[:FINGERPRINT_BYTES], stored[FINGERPRINT_BYTES:]


def storable(status: int) -> bool:
    """Whether an upstream status is the final answer to a key (see ``RETRYABLE``)."""
    return 200 <= status < 500 and status not in RETRYABLE
