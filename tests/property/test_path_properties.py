"""Properties of canonical paths: one path per meaning, and what the upstream reads back."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gw.core.paths import _canonicalize_slow, canonicalize, encode_path, split_target
from gw.errors import InvalidPath

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Decoded segment text: plain pchars, characters that need encoding, non-ASCII, lone '%'.
SEGMENT_CHARS = st.sampled_from([*"abcXYZ019-._~!$&'()*+,=:@", " ", "%", '"', "\u00e9", "\u20ac"])
SEGMENT = st.text(SEGMENT_CHARS, min_size=1, max_size=6).filter(lambda s: s not in (".", ".."))


@st.composite
def canonical_paths(draw: st.DrawFn) -> str:
    """Draw a canonical path: decoded segments, maybe a trailing slash."""
    segments = draw(st.lists(SEGMENT, max_size=5))
    # A lone '%' followed by two hex digits would be double encoding, never canonical.
    segments = [s for s in segments if not _has_escape(s)]
    if not segments:
        return "/"
    return "/" + "/".join(segments) + ("/" if draw(st.booleans()) else "")


def _has_escape(text: str) -> bool:
    hexdigits = set("0123456789abcdefABCDEF")
    return any(
        c == "%" and len(text) > i + 2 and text[i + 1] in hexdigits and text[i + 2] in hexdigits
        for i, c in enumerate(text)
    )


@st.composite
def spellings(draw: st.DrawFn, canonical: str) -> str:
    """Draw another raw spelling of a canonical path: random escapes, './', 'x/../', '//'."""
    segments = [] if canonical == "/" else canonical.strip("/").split("/")
    raw: list[str] = []
    for segment in segments:
        raw += draw(st.sampled_from([[], ["."], ["", ""], ["zz", ".."], ["zz", "%2E%2e"], ["%2e"]]))
        raw.append("".join(_spell_char(draw, c) for c in segment))
    trailing = canonical.endswith("/") and canonical != "/"
    if trailing or not segments:
        raw.append(draw(st.sampled_from(["", ".", "%2e"])))
    return "/" + "/".join(raw)


def _spell_char(draw: st.DrawFn, char: str) -> str:
    encoded = "".join(f"%{b:02X}" for b in char.encode())
    if encode_path("/" + char) != "/" + char:  # must be encoded on the wire
        return draw(st.sampled_from([encoded, encoded.lower()]))
    return draw(st.sampled_from([char, encoded, encoded.lower()]))


RAW_ALPHABET = st.sampled_from(
    [*"ab/.%2eEfF5cC0\\;?# ", "%2f", "%2e", "%25", "%c0%af", "%00", "\u00e9", "%C3%A9"]
)
RAW_PATHS = st.lists(RAW_ALPHABET, max_size=14).map(lambda parts: "/" + "".join(parts))


@SETTINGS
@given(canonical_paths())
def test_encode_then_canonicalize_gives_back_the_canonical_path(canonical: str) -> None:
    """The upstream, decoding the re-encoded path once, reads exactly the router's path."""
    assert canonicalize(encode_path(canonical)) == canonical


@SETTINGS
@given(st.data(), canonical_paths())
def test_every_spelling_of_a_path_reaches_the_same_canonical_path(
    data: st.DataObject, canonical: str
) -> None:
    """Escapes of any character, '.', 'x/..' and '//' never change which path is meant."""
    raw = data.draw(spellings(canonical))
    assert canonicalize(raw) == canonical


@SETTINGS
@given(RAW_PATHS)
def test_canonicalize_is_idempotent(raw: str) -> None:
    """Canonicalizing a canonical path (re-encoded where it must be) changes nothing."""
    try:
        canonical = canonicalize(raw)
    except InvalidPath:
        return
    if encode_path(canonical) == canonical:  # nothing to encode: it is a valid raw path as is
        assert canonicalize(canonical) == canonical
    assert canonicalize(encode_path(canonical)) == canonical


@SETTINGS
@given(RAW_PATHS)
def test_canonical_path_has_no_empty_dot_or_ambiguous_segment(raw: str) -> None:
    """A canonical path has no '//', '.', '..', separator, NUL, control or double escape."""
    try:
        canonical = canonicalize(raw)
    except InvalidPath:
        return
    assert canonical.startswith("/")
    assert "//" not in canonical
    segments = canonical.strip("/").split("/")
    assert canonical == "/" or all(s not in ("", ".", "..") for s in segments)
    assert not any(c in canonical for c in "\\?#;\x00\r\n\t\x7f")
    assert not _has_escape(canonical)


@SETTINGS
@given(st.one_of(RAW_PATHS, st.text(max_size=20)))
def test_fast_path_agrees_with_full_canonicalization(raw: str) -> None:
    """The precompiled fast path never returns something the full algorithm would not."""
    outcomes: list[object] = []
    for function in (canonicalize, _canonicalize_slow):
        try:
            outcomes.append(function(raw))
        except InvalidPath:
            outcomes.append(InvalidPath)
    assert outcomes[0] == outcomes[1]


@SETTINGS
@given(st.text(max_size=30))
def test_canonicalize_only_ever_raises_invalid_path(raw: str) -> None:
    """Any client input gives a canonical path or a 400, never another exception (a 500)."""
    with contextlib.suppress(InvalidPath):
        canonicalize(raw)


@SETTINGS
@given(canonical_paths(), st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E)))
def test_query_passes_byte_for_byte(canonical: str, query: str) -> None:
    """split_target never touches the query string, even '?', '%' or '#' inside it."""
    path = encode_path(canonical)
    assert split_target(f"{path}?{query}") == (path, query)
    assert split_target(f"http://example.com{path}?{query}") == (path, query)
