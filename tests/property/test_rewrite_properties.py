"""Invariants of prefix rewrites: the upstream path is always a clean, canonical path."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gw.core.paths import canonicalize, encode_path
from gw.core.rewrite import Rewrite

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# A small alphabet, so that prefixes and paths share segments (and near-misses like 'apix').
SEGMENTS = st.sampled_from(["api", "apix", "v1", "v2", "a b", "caf\u00e9", "100%", "x"])


@st.composite
def canonical_paths(draw: st.DrawFn) -> str:
    """Draw a canonical path, maybe with a trailing slash."""
    segments = draw(st.lists(SEGMENTS, max_size=4))
    if not segments:
        return "/"
    return "/" + "/".join(segments) + ("/" if draw(st.booleans()) else "")


PREFIXES = st.lists(SEGMENTS, max_size=2).map(lambda segments: "/" + "/".join(segments))
TARGETS = st.one_of(
    st.just(""),
    st.lists(SEGMENTS, min_size=1, max_size=2).map(lambda segments: "/" + "/".join(segments)),
)


@st.composite
def rewrites(draw: st.DrawFn) -> Rewrite:
    """Draw a rewrite: strip, replace or neither, with or without a target prefix."""
    target = draw(TARGETS)
    kind = draw(st.sampled_from(["strip", "replace", "none"]))
    if kind == "strip":
        return Rewrite(strip_prefix=draw(PREFIXES), target_prefix=target)
    if kind == "replace":
        return Rewrite(replace_prefix=(draw(PREFIXES), draw(PREFIXES)), target_prefix=target)
    return Rewrite(target_prefix=target)


def _segments(path: str) -> list[str]:
    return [] if path == "/" else path.strip("/").split("/")


def _old_prefix(rewrite: Rewrite) -> str | None:
    if rewrite.replace_prefix is not None:
        return rewrite.replace_prefix[0]
    return rewrite.strip_prefix


def _has_prefix(path: str, prefix: str) -> bool:
    """Whether the path starts with the prefix on a segment boundary (by segments)."""
    wanted = _segments(prefix)
    return _segments(path)[: len(wanted)] == wanted


@SETTINGS
@given(rewrites(), canonical_paths())
def test_result_starts_with_exactly_one_slash_and_has_no_empty_segment(
    rewrite: Rewrite, path: str
) -> None:
    """The upstream path starts with exactly one '/' and never contains '//'."""
    result = rewrite.apply(path)
    assert result.startswith("/")
    assert "//" not in result


@SETTINGS
@given(rewrites(), canonical_paths())
def test_result_has_no_dot_segments_and_stays_canonical(rewrite: Rewrite, path: str) -> None:
    """No '.'/'..' segment appears, and the upstream decoding the result reads it unchanged."""
    result = rewrite.apply(path)
    assert not {".", ".."} & set(_segments(result))
    assert canonicalize(encode_path(result)) == result


@SETTINGS
@given(rewrites(), canonical_paths())
def test_result_starts_with_target_prefix(rewrite: Rewrite, path: str) -> None:
    """With a target_prefix set, the result is that prefix or lies below it (segment-wise)."""
    result = rewrite.apply(path)
    target = rewrite.target_prefix
    if target:
        assert result == target or result.startswith(target + "/")


@SETTINGS
@given(rewrites(), canonical_paths())
def test_trailing_slash_is_kept(rewrite: Rewrite, path: str) -> None:
    """The result ends with '/' exactly when the input did, except for the root '/' itself."""
    result = rewrite.apply(path)
    if path != "/" and result != "/":
        assert result.endswith("/") == path.endswith("/")


@SETTINGS
@given(rewrites(), canonical_paths())
def test_prefix_matches_on_segment_boundaries_only(rewrite: Rewrite, path: str) -> None:
    """A path without the prefix (by whole segments) only gets the target prefix prepended;
    a path with it keeps every segment after the prefix, in order."""
    result_segments = _segments(rewrite.apply(path))
    target = _segments(rewrite.target_prefix or "/")
    assert result_segments[: len(target)] == target
    after_target = result_segments[len(target) :]
    old = _old_prefix(rewrite)
    if old is None or not _has_prefix(path, old):
        assert after_target == _segments(path)
        return
    new = _segments(rewrite.replace_prefix[1]) if rewrite.replace_prefix else []
    assert after_target == new + _segments(path)[len(_segments(old)) :]


@SETTINGS
@given(rewrites(), canonical_paths())
def test_a_rewrite_that_says_identity_leaves_every_path_as_it_is(
    rewrite: Rewrite, path: str
) -> None:
    """The pipeline skips ``apply`` for an ``identity`` rewrite (PERF): that must be exact, and
    only a rewrite with nothing to strip, replace or add may say so."""
    if rewrite.identity:
        assert rewrite.apply(path) == path
    assert rewrite.identity == (
        rewrite.strip_prefix is None
        and rewrite.replace_prefix is None
        and not rewrite.target_prefix
    )
