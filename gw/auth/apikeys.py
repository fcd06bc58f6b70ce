"""API keys: clients send a key in a header; the gateway knows only the SHA-256 of each key.

For operators, generate a key and its digest (the key is read from standard input, so it
stays out of shell history and the process list)::

    python -c 'import secrets; print("gwk_" + secrets.token_urlsafe(32))'
    python -c 'import sys; from gw.auth.apikeys import hash_api_key; \\
        print(hash_api_key(sys.stdin.readline().rstrip("\\n")))'

then list ``{id, sha256, consumer, role}`` under ``auth.api_keys.keys`` or in the YAML/JSON file
named by ``auth.api_keys.file`` (a list, or a mapping with a ``keys`` list). The file is read
when the configuration is loaded, so a reload picks up added or revoked keys.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

from gw.auth.identity import check_header_value
from gw.auth.settings import ApiKeyEntry, ApiKeySettings
from gw.errors import ConfigError

MAX_KEY_CHARS = 512


def hash_api_key(key: str) -> str:
    """Return the lowercase hex SHA-256 of ``key`` (UTF-8), as stored in the configuration."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    """A known key: who it belongs to, never the key itself."""

    id: str
    consumer: str
    role: str | None
    digest: bytes


class ApiKeyStore:
    """Look up presented keys by digest."""

    def __init__(self, entries: Iterable[ApiKeyEntry]) -> None:
        self._by_digest: dict[bytes, ApiKey] = {}
        ids: set[str] = set()
        for entry in entries:
            key = ApiKey(entry.id, entry.consumer, entry.role, bytes.fromhex(entry.sha256))
            if key.id in ids or key.digest in self._by_digest:
                raise ConfigError([f"api_keys: key {key.id!r} is listed twice"])
            ids.add(key.id)
            self._by_digest[key.digest] = key

    @classmethod
    def from_settings(cls, settings: ApiKeySettings) -> ApiKeyStore:
        """Build the store from inline keys and the key file.

        Raises:
            ConfigError: when the file cannot be read or an entry is invalid.
        """
        entries = list(settings.keys)
        if settings.file:
            entries += load_key_file(settings.file)
        for entry in entries:
            _check_header_safe(entry)
        return cls(entries)

    def lookup(self, presented: str) -> ApiKey | None:
        """Return the key whose digest matches ``presented``, or None."""
        if not 0 < len(presented) <= MAX_KEY_CHARS:
            return None
        digest = hashlib.sha256(presented.encode()).digest()
        # APPSEC: the dict is keyed by digests, so its timing can at most reveal something
        # about a SHA-256 output, which does not help guess a key; the constant-time compare
        # is the final word.
        found = self._by_digest.get(digest)
        if found is None or not hmac.compare_digest(found.digest, digest):
            return None
        return found

    def __len__(self) -> int:
        return len(self._by_digest)


def load_key_file(path: str) -> list[ApiKeyEntry]:
    """Read the key file (YAML or JSON): a list of entries, or ``{keys: [...]}``.

    Raises:
        ConfigError: naming the file and the entry at fault.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as ex:
        raise ConfigError([f"api_keys.file: cannot read {path} ({ex.strerror})"]) from None
    except yaml.YAMLError as ex:
        raise ConfigError([f"api_keys.file: {path} is not valid YAML/JSON: {ex}"]) from None
    if isinstance(data, Mapping) and set(data) == {"keys"}:
        data = data["keys"]
    if not isinstance(data, list):
        raise ConfigError([f"api_keys.file: {path} must hold a list of keys"])
    return [_entry(path, i, item) for i, item in enumerate(data)]


def _entry(path: str, index: int, item: Any) -> ApiKeyEntry:
    try:
        return ApiKeyEntry.model_validate(item)
    except ValidationError as ex:
        problems = [
            f"api_keys.file {path} [{index}]"
            + "".join(f".{part}" for part in err["loc"])
            + f": {str(err['msg']).removeprefix('Value error, ')}"
            for err in ex.errors()
        ]
        raise ConfigError(problems) from None


def _check_header_safe(entry: ApiKeyEntry) -> None:
    for name, value in (("consumer", entry.consumer), ("role", entry.role)):
        if value is None:
            continue
        try:
            check_header_value(value)
        except ValueError as ex:
            raise ConfigError([f"api_keys: key {entry.id!r} {name}: {ex}"]) from None
