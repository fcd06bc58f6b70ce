"""Prefix rewrites: what path the upstream receives."""

from __future__ import annotations

import pytest

from gw.core.paths import encode_path
from gw.core.rewrite import Rewrite, validate_prefix


def test_seed_003_strip_prefix() -> None:
    assert Rewrite(strip_prefix="/api").apply("/api/orders/ord_x7k9") == "/orders/ord_x7k9"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/orders/x", "/orders/x"),
        ("/api", "/"),  # the prefix itself becomes the root
        ("/api/", "/"),
        ("/api/x/", "/x/"),  # a trailing slash is kept
        ("/apix", "/apix"),  # segment boundaries only
        ("/apix/y", "/apix/y"),
        ("/other/api/x", "/other/api/x"),  # only a leading prefix
        ("/", "/"),
    ],
)
def test_strip_prefix(path: str, expected: str) -> None:
    assert Rewrite(strip_prefix="/api").apply(path) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/v1/u", "/v2/u"),
        ("/api/v1", "/v2"),
        ("/api/v1/", "/v2/"),
        ("/api/v10/u", "/api/v10/u"),  # not on a segment boundary
        ("/api/v2/u", "/api/v2/u"),
    ],
)
def test_replace_prefix(path: str, expected: str) -> None:
    assert Rewrite(replace_prefix=("/api/v1", "/v2")).apply(path) == expected


@pytest.mark.parametrize(
    ("rewrite", "path", "expected"),
    [
        (Rewrite(target_prefix="/base"), "/x", "/base/x"),
        (Rewrite(target_prefix="/base"), "/", "/base"),  # the root case: no trailing slash
        (Rewrite(target_prefix="/base"), "/x/", "/base/x/"),
        (Rewrite(strip_prefix="/api", target_prefix="/base"), "/api", "/base"),
        (Rewrite(strip_prefix="/api", target_prefix="/base"), "/api/", "/base/"),
        (Rewrite(strip_prefix="/api", target_prefix="/base"), "/api/o/1", "/base/o/1"),
        (Rewrite(strip_prefix="/api", target_prefix="/b/c"), "/apix", "/b/c/apix"),
        (Rewrite(target_prefix=""), "/x", "/x"),
        (Rewrite(target_prefix="/"), "/x", "/x"),
    ],
)
def test_target_prefix_is_prepended_last(rewrite: Rewrite, path: str, expected: str) -> None:
    assert rewrite.apply(path) == expected


@pytest.mark.parametrize(
    ("replace", "path", "expected"),
    [
        (("/", "/v2"), "/x", "/v2/x"),  # the root prefix matches every path
        (("/", "/v2"), "/", "/v2"),
        (("/api", "/"), "/api/x", "/x"),  # replacing with the root strips
        (("/api", ""), "/api/x", "/x"),
    ],
)
def test_root_prefixes(replace: tuple[str, str], path: str, expected: str) -> None:
    assert Rewrite(replace_prefix=replace).apply(path) == expected


def test_encoded_prefixes_are_decoded_like_paths() -> None:
    rewrite = Rewrite(strip_prefix="/my%20files", target_prefix="/caf%C3%A9")
    assert rewrite.strip_prefix == "/my files"
    assert rewrite.apply("/my files/a b") == "/caf\u00e9/a b"
    assert encode_path(rewrite.apply("/my files/a b")) == "/caf%C3%A9/a%20b"


def test_rewriting_never_builds_a_host_looking_path() -> None:
    """A client path can never become '//host/...' upstream, whatever the prefixes."""
    rewrite = Rewrite(strip_prefix="/api", target_prefix="/base")
    assert rewrite.apply("/api/evil.example/x") == "/base/evil.example/x"
    assert not Rewrite(strip_prefix="/api").apply("/api/evil.example").startswith("//")


def test_strip_and_replace_together_is_an_error() -> None:
    with pytest.raises(ValueError, match="not both"):
        Rewrite(strip_prefix="/a", replace_prefix=("/a", "/b"))


@pytest.mark.parametrize(
    ("prefix", "words"),
    [
        ("api", "must start with '/'"),
        ("", "must start with '/'"),
        ("/api/", "must not end with '/'; write '/api'"),
        ("/a//b", "empty segment"),
        ("/a/./b", "'.' or '..'"),
        ("/a/..", "'.' or '..'"),
        ("/a/%2e%2e/b", "'.' or '..'"),
        ("/a%2Fb", "encoded '/'"),
        ("/a;b", "';'"),
        ("/..", "climbs above the root"),
    ],
)
def test_validate_prefix_rejects_with_readable_message(prefix: str, words: str) -> None:
    with pytest.raises(ValueError) as caught:
        validate_prefix(prefix)
    assert words in str(caught.value)


@pytest.mark.parametrize(
    ("prefix", "canonical"),
    [
        ("/", "/"),
        ("/api", "/api"),
        ("/api/v1", "/api/v1"),
        ("/my%20files", "/my files"),
        ("/my files", "/my files"),  # already canonical: unchanged (validating twice is safe)
        ("/100%", "/100%"),
    ],
)
def test_validate_prefix_returns_canonical_form(prefix: str, canonical: str) -> None:
    assert validate_prefix(prefix) == canonical
    assert validate_prefix(canonical) == canonical


def test_invalid_prefix_in_rewrite_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="must not end with '/'"):
        Rewrite(target_prefix="/base/")
