"""Response transformations: remove and rename JSON fields, add and remove headers.

Seed 003's block loads unchanged::

    transformations:
      - path: /api/users/**            # a route pattern (gw.core.patterns), matched against the
        response:                      # canonical request path the client sent
          remove_fields: [internal_id, db_shard, feature_flags, created_by_admin]
          rename_fields: {email_address: email}
        request: {add_headers: {X-Api-Version: "2"}, remove_headers: [Cookie]}

Field paths: ``name``; ``a.b`` for nested objects; ``items[].id`` for every element of an
array (``[].id`` for a top-level array; ``a[][].b`` for arrays of arrays). A path that does not
match (missing key, wrong type) changes nothing. Keys containing ``.``, ``[`` or ``]`` cannot be
named.

Order: within an entry, fields are removed first, then renamed (so ``remove_fields: [email]``
with ``rename_fields: {email_address: email}`` yields the renamed value); then headers are
removed, then added (``add_headers`` replaces any existing copy). A rename keeps the value in
its object and at its position under the new name; a rename onto a key that already exists
replaces that key's value. When several entries match a path, every one applies, least specific
first, so the most specific entry has the last word.

Bodies are transformed only when they are JSON (``application/json`` or ``application/*+json``,
UTF-8), not ``Content-Encoding``-compressed, of known length (``Content-Length``) within
``max_body_bytes`` (default 1 MiB), and parse as standard JSON. Anything else passes through
untouched and streamed; header rules still apply. A changed body is re-serialized compactly
(numbers keep their value, not their spelling: ``129.00`` becomes ``129.0``), gets a correct
``Content-Length``, and a strong ``ETag`` becomes weak.

Standard library and pure gw modules only.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from gw.core.patterns import parse_pattern
from gw.core.routes import Route
from gw.core.routing import RouteTable
from gw.errors import ConfigError
from gw.shaping import dump_json, load_json

if TYPE_CHECKING:
    from gw.shaping.settings import TransformationSettings

Headers = list[tuple[str, str]]
FieldPath = tuple[str, ...]  # names, with EACH for "every element of this array"

EACH = "[]"
_TOKEN = re.compile(r"([^.\[\]]*)((?:\[\])*)")
_PLAIN_NAME = re.compile(r"[^.\[\]]+")
_BODILESS = frozenset({204, 304})
# Headers that vouch for the exact bytes of the body: wrong once the body changes.
_DIGESTS = frozenset({"content-md5", "digest", "content-digest", "repr-digest"})


def parse_field_path(text: str) -> FieldPath:
    """Parse ``a.b``, ``items[].id`` or ``[].id`` into steps.

    Raises:
        ValueError: with a readable message.
    """
    steps: list[str] = []
    tokens = text.split(".")
    for i, token in enumerate(tokens):
        found = _TOKEN.fullmatch(token)
        if found is None or (not found.group(1) and (i > 0 or not found.group(2))):
            raise ValueError(
                f"field path {text!r}: write names separated by '.', with '[]' after a name "
                "for every element of an array (items[].id, or [].id for a top-level array)"
            )
        if found.group(1):
            steps.append(found.group(1))
        steps += [EACH] * (len(found.group(2)) // 2)
    if steps[-1] == EACH:
        raise ValueError(f"field path {text!r} must end with a field name, not '[]'")
    return tuple(steps)


def check_rename(source: str, target: str) -> str:
    """Return the new key name for a rename; the value stays in the same object.

    The target is a plain name (``email``) or a path with the same parent as the source
    (``profile.email`` for ``profile.email_address``).

    Raises:
        ValueError: with a readable message.
    """
    steps = parse_field_path(source)
    if _PLAIN_NAME.fullmatch(target):
        return target
    target_steps = parse_field_path(target)
    if target_steps[:-1] != steps[:-1]:
        raise ValueError(
            f"rename {source!r} -> {target!r}: a rename keeps the value in the same object; "
            f"write the new name alone ({target_steps[-1]!r})"
        )
    return target_steps[-1]


@dataclass(frozen=True)
class Entry:
    """One compiled ``transformations:`` entry."""

    where: str
    removes: tuple[FieldPath, ...] = ()
    renames: tuple[tuple[FieldPath, str], ...] = ()
    request_add: tuple[tuple[str, str], ...] = ()
    request_remove: frozenset[str] = frozenset()
    response_add: tuple[tuple[str, str], ...] = ()
    response_remove: frozenset[str] = frozenset()
    max_body_bytes: int = 1024 * 1024

    @property
    def has_fields(self) -> bool:
        return bool(self.removes or self.renames)

    def reshape(self, document: Any) -> bool:
        """Apply the field rules in place; return whether anything changed."""
        changed = False
        for steps in self.removes:
            for parent in _parents(document, steps):
                changed |= parent.pop(steps[-1], _ABSENT) is not _ABSENT
        for steps, new in self.renames:
            for parent in _parents(document, steps):
                changed |= _rename(parent, steps[-1], new)
        return changed


_ABSENT = object()


def _parents(node: Any, steps: FieldPath) -> Iterator[dict[str, Any]]:
    """Yield every object that a field path's last step would look in."""
    if len(steps) == 1:
        if isinstance(node, dict):
            yield node
        return
    head, rest = steps[0], steps[1:]
    if head == EACH:
        if isinstance(node, list):
            for item in node:
                yield from _parents(item, rest)
    elif isinstance(node, dict) and head in node:
        yield from _parents(node[head], rest)


def _rename(obj: dict[str, Any], old: str, new: str) -> bool:
    """Rename a key in place, keeping its position; an existing ``new`` key is replaced."""
    if old not in obj or old == new:
        return False
    items = [(new if key == old else key, value) for key, value in obj.items() if key != new]
    obj.clear()
    obj.update(items)
    return True


class Rules:
    """The transformations that apply to one request path (entries least specific first)."""

    def __init__(self, entries: Sequence[Entry]) -> None:
        self.entries = tuple(entries)
        self.has_fields = any(entry.has_fields for entry in self.entries)
        limits = [entry.max_body_bytes for entry in self.entries if entry.has_fields]
        self.max_body_bytes = min(limits, default=0)

    def request_headers(self, headers: dict[str, str]) -> dict[str, str]:
        """Return the upstream request headers with the request rules applied."""
        for entry in self.entries:
            if entry.request_remove or entry.request_add:
                drop = entry.request_remove | {name.lower() for name, _ in entry.request_add}
                headers = {n: v for n, v in headers.items() if n.lower() not in drop}
                headers.update(entry.request_add)
        return headers

    def response_headers(self, headers: Sequence[tuple[str, str]]) -> Headers:
        """Return the response headers with the header rules applied (body untouched)."""
        result = list(headers)
        for entry in self.entries:
            if entry.response_remove or entry.response_add:
                drop = entry.response_remove | {name.lower() for name, _ in entry.response_add}
                result = [(n, v) for n, v in result if n.lower() not in drop]
                result += entry.response_add
        return result

    def wants_body(self, status: int, headers: Sequence[tuple[str, str]]) -> bool:
        """Return whether the body should be read whole and passed to ``apply``.

        False for bodies that must pass through streamed: not JSON, compressed, of unknown
        length, larger than the limit, or when no entry has field rules.
        """
        if not self.has_fields or status in _BODILESS or status < 200:
            return False
        length = _header(headers, "content-length")
        if length is None or not length.strip().isdigit():
            return False
        return int(length) <= self.max_body_bytes and _transformable(headers)

    def apply(
        self, status: int, headers: Sequence[tuple[str, str]], body: bytes
    ) -> tuple[Headers, bytes]:
        """Return the transformed headers and body; the Content-Length is always correct.

        A body that is not eligible (see ``wants_body``, with ``len(body)`` as its length) or
        does not parse as JSON is returned unchanged.
        """
        result = list(headers)
        if (
            self.has_fields
            and status not in _BODILESS
            and status >= 200
            and len(body) <= self.max_body_bytes
            and _transformable(result)
        ):
            changed = self._reshape(body)
            if changed is not None:
                body = changed
                result = _describe_new_body(result, len(body))
        return self.response_headers(result), body

    def _reshape(self, body: bytes) -> bytes | None:
        """Return the re-serialized body, or None when it is not JSON or nothing changed."""
        try:
            document = load_json(body)
        except ValueError:
            return None
        changed = False
        for entry in self.entries:
            changed |= entry.reshape(document)
        return dump_json(document) if changed else None


def _transformable(headers: Sequence[tuple[str, str]]) -> bool:
    """Return whether the headers describe an uncompressed UTF-8 JSON body."""
    encoding = _header(headers, "content-encoding")
    if encoding is not None and encoding.strip().lower() not in ("", "identity"):
        return False
    return _is_json(_header(headers, "content-type") or "")


def _is_json(content_type: str) -> bool:
    media, *params = content_type.split(";")
    media = media.strip().lower()
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        return False
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip(' "').lower() not in ("utf-8", "utf8"):
            return False
    return True


def _describe_new_body(headers: Headers, length: int) -> Headers:
    """Fix the headers that describe the body's bytes."""
    result: Headers = []
    for name, value in headers:
        lower = name.lower()
        if lower == "content-length" or lower in _DIGESTS:
            continue
        if lower == "etag" and not value.startswith("W/"):
            value = "W/" + value  # same upstream version, different bytes
        result.append((name, value))
    result.append(("Content-Length", str(length)))
    return result


def _header(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


class Transformer:
    """Every ``transformations:`` entry, compiled once into a route table of patterns."""

    def __init__(self, entries: Sequence[Entry], patterns: Sequence[str]) -> None:
        self.entries = tuple(entries)
        routes = [
            Route(name=entry.where, pattern=pattern, payload=i)
            for i, (entry, pattern) in enumerate(zip(entries, patterns, strict=True))
        ]
        self._table: RouteTable[int] = RouteTable(routes)
        self._combined: dict[tuple[int, ...], Rules] = {}

    @classmethod
    def compile(
        cls, settings: Sequence[TransformationSettings], where: str = "transformations"
    ) -> Transformer:
        """Compile validated entries.

        Raises:
            ConfigError: two entries with the same path pattern (merge them into one).
        """
        problems = _duplicates(settings, where)
        if problems:
            raise ConfigError(problems)
        entries = [_compile_entry(entry, f"{where}[{i}]") for i, entry in enumerate(settings)]
        return cls(entries, [entry.path for entry in settings])

    def for_path(self, path: str) -> Rules | None:
        """Return the rules for a canonical request path, or None when no entry matches."""
        if not self.entries:
            return None  # PERF: the common case costs one attribute test
        matches = self._table.candidates("GET", path)
        if not matches:
            return None
        key = tuple(match.route.payload for match in reversed(matches))
        rules = self._combined.get(key)
        if rules is None:
            # PERF: one Rules per distinct set of matching entries, a set the config bounds.
            rules = self._combined[key] = Rules([self.entries[i] for i in key])
        return rules


def _duplicates(settings: Sequence[TransformationSettings], where: str) -> list[str]:
    seen: dict[str, int] = {}
    problems = []
    for i, entry in enumerate(settings):
        normal = parse_pattern(entry.path).normalized
        if normal in seen:
            problems.append(
                f"{where}[{i}].path: {entry.path!r} matches exactly the same paths as "
                f"{where}[{seen[normal]}]; merge the two entries"
            )
        seen.setdefault(normal, i)
    return problems


def _compile_entry(entry: TransformationSettings, where: str) -> Entry:
    compiled = Entry(where=where, max_body_bytes=entry.max_body_bytes)
    request, response = entry.request, entry.response
    if request is not None:
        compiled = replace(
            compiled,
            request_add=tuple(request.add_headers.items()),
            request_remove=frozenset(name.lower() for name in request.remove_headers),
        )
    if response is not None:
        compiled = replace(
            compiled,
            removes=tuple(parse_field_path(path) for path in response.remove_fields),
            renames=tuple(
                (parse_field_path(old), check_rename(old, new))
                for old, new in response.rename_fields.items()
            ),
            response_add=tuple(response.add_headers.items()),
            response_remove=frozenset(name.lower() for name in response.remove_headers),
        )
    return compiled
