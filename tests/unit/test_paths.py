"""Canonical paths: the hostile corpus, readable rejections, request targets, re-encoding."""

from __future__ import annotations

import pytest

from gw.core.paths import canonicalize, canonicalize_config, encode_path, split_target
from gw.errors import InvalidPath
from tests.data.hostile_paths import HOSTILE_PATHS, Expected


@pytest.mark.parametrize(
    ("raw", "expected"), HOSTILE_PATHS, ids=[ascii(r) for r, _ in HOSTILE_PATHS]
)
def test_hostile_corpus(raw: str, expected: Expected) -> None:
    if isinstance(expected, str):
        assert canonicalize(raw) == expected
    else:
        with pytest.raises(expected) as caught:
            canonicalize(raw)
        assert caught.value.status == 400
        assert caught.value.message  # a readable reason, never empty


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("/a%2Fb", "encoded '/' (%2F) is not allowed in a path segment"),
        ("/a%5cb", "encoded '\\' (%5C)"),
        ("/a%3bb", "encoded ';' (%3B)"),
        ("/a%00", "encoded NUL (%00)"),
        ("/a%0d", "control character U+000D"),
        ("/../x", "'..' climbs above the root"),
        ("/a;b", "';' (path parameter)"),
        ("/a\\b", "backslash"),
        ("/a b", "raw space"),
        ("/caf\u00e9", "non-ASCII character U+00E9"),
        ("/%c0%af", "not valid UTF-8"),
        ("/a%2", "'%' must be followed by two hex digits"),
        ("/%252e", "double encoding"),
        ("a", "must start with '/'"),
    ],
)
def test_rejection_names_the_problem(raw: str, words: str) -> None:
    with pytest.raises(InvalidPath) as caught:
        canonicalize(raw)
    assert words in caught.value.message


def test_fast_path_and_slow_path_agree_on_plain_paths() -> None:
    plain = ["/", "/a", "/a/", "/api/orders/ord_x7k9", "/a.b/c..d/...", "/x:y@z/~!$&'()*+,="]
    assert [canonicalize(path) for path in plain] == plain


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/a/b?x=1", ("/a/b", "x=1")),
        ("/a/b", ("/a/b", "")),
        ("/a?", ("/a", "")),
        ("/a?x=%20&y=a?b", ("/a", "x=%20&y=a?b")),  # the query is kept byte for byte
        ("/a%3Fb?c", ("/a%3Fb", "c")),  # an encoded '?' is not the query start
        ("//a//b?q", ("//a//b", "q")),  # the raw path is canonicalized later
        ("http://example.com:8080/a/b?x=1", ("/a/b", "x=1")),
        ("https://example.com/a", ("/a", "")),
        ("HTTP://Example.com/a", ("/a", "")),
        ("http://example.com", ("/", "")),  # an empty path is '/'
        ("http://example.com?x=1", ("/", "x=1")),
        ("http://user@evil.example/a", ("/a", "")),  # the authority never reaches the path
    ],
)
def test_split_target(target: str, expected: tuple[str, str]) -> None:
    assert split_target(target) == expected


@pytest.mark.parametrize(
    "target", ["*", "", "a/b", "ftp://example.com/a", "http://example.com#frag", "?x=1"]
)
def test_split_target_rejects_what_is_not_a_path(target: str) -> None:
    with pytest.raises(InvalidPath):
        split_target(target)


def test_split_then_canonicalize_absolute_form() -> None:
    raw_path, query = split_target("http://h/a/./b/%2e%2e/c?x=%2e%2e")
    assert (canonicalize(raw_path), query) == ("/a/c", "x=%2e%2e")


@pytest.mark.parametrize(
    ("canonical", "wire"),
    [
        ("/", "/"),
        ("/api/orders/ord_x7k9", "/api/orders/ord_x7k9"),
        ("/a b", "/a%20b"),
        ("/100%", "/100%25"),
        ("/caf\u00e9", "/caf%C3%A9"),
        ("/a/\U0001f600/", "/a/%F0%9F%98%80/"),
        ("/k:v@h/!$&'()*+,=-._~", "/k:v@h/!$&'()*+,=-._~"),
        ('/a"<>[]^`{|}b', "/a%22%3C%3E%5B%5D%5E%60%7B%7C%7Db"),
    ],
)
def test_encode_path(canonical: str, wire: str) -> None:
    assert encode_path(canonical) == wire
    assert canonicalize(wire) == canonical


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("/my%20files", "/my files"),  # as in a URL
        ("/my files", "/my files"),  # already decoded
        ("/caf\u00e9", "/caf\u00e9"),
        ("/100%", "/100%"),  # a lone '%' is a character
        ("/a/./b", "/a/b"),
    ],
)
def test_canonicalize_config_accepts_encoded_or_decoded(written: str, canonical: str) -> None:
    assert canonicalize_config(written) == canonical


@pytest.mark.parametrize("written", ["/a%2Fb", "/a;b", "/a\\b", "/..", "/a%00", "api"])
def test_canonicalize_config_rejects_ambiguous(written: str) -> None:
    with pytest.raises(InvalidPath):
        canonicalize_config(written)


def test_the_canonical_forms_kept_are_bounded_and_never_a_refusal() -> None:
    """Clients choose paths: at most 1,024 canonical forms are kept, none of a path over 256
    characters, a refused path is refused every time, and a kept form is the fresh one."""
    from gw.core import paths

    for i in range(1100):
        assert canonicalize(f"/kept/./{i}/") == f"/kept/{i}/"
        assert len(paths._CANONICAL) <= 1024
    assert canonicalize("/kept/./7/") == "/kept/7/"  # asked again: the same answer
    long = "/" + "x" * 300
    assert canonicalize(long) == long
    assert long not in paths._CANONICAL
    for _ in range(2):
        with pytest.raises(InvalidPath):
            canonicalize("/a%2Fb")
    assert "/a%2Fb" not in paths._CANONICAL
    assert split_target("/p/./q?x=1") == ("/p/./q", "x=1")  # origin form, split as it came
