"""Turn the request target a client sent into the one canonical path the gateway uses.

Pure module. The canonical path is decoded once and canonicalized once; that single string is
used for routing, authentication decisions, rate-limit keys, cache keys and (re-encoded by
``encode_path``) the path sent upstream, so the router and the upstream never read different
paths. Whatever cannot be made unambiguous is rejected with ``InvalidPath`` (400).

A canonical path starts with ``/``, has no empty, ``.`` or ``..`` segments, ends with ``/``
only when the client's path did (the root is ``/``) and holds *decoded* segment text: it may
contain characters such as a space or ``%`` that must be re-encoded before they go on a wire.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote_to_bytes

from gw.core.bounded import LONGEST_PATH_KEPT, remember
from gw.errors import InvalidPath

# Characters a canonical segment may contain without any percent-encoding: RFC 3986
# unreserved, sub-delims except ';', and ':' '@'.
_PCHAR = r"A-Za-z0-9\-._~!$&'()*+,=:@"

# PERF: a raw path made only of plain pchars, without '%', '//' or a segment starting with '.'
# (so no dot segment), is already canonical: one precompiled fullmatch and two substring tests
# recognise it and skip the segment-by-segment work.
_PLAIN = re.compile(rf"/[{_PCHAR}/]*")

# APPSEC: raw bytes outside printable ASCII, '\' (a separator on Windows and for some
# upstreams), '#' (fragment), ';' (path parameters, read differently by Tomcat/Spring and
# proxies) and '?' (the query must already be split off) can be read two ways: reject them.
_RAW_FORBIDDEN = re.compile(r"[^\x21-\x7e]|[\\#;?]")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# APPSEC: after the one decode, these would change the path's structure for a reader that
# decodes again or splits differently: '/', '\', '?', '#', ';', NUL and control characters
# (C0, DEL and C1), and a '%XX' sequence (double encoding).
_DECODED_FORBIDDEN = re.compile(r"[/\\?#;\x00-\x1f\x7f-\x9f]|%[0-9A-Fa-f]{2}")

_SCHEME_AUTHORITY = re.compile(r"(?i)https?://[^/?#]*")
_SAFE_ON_WIRE = "/!$&'()*+,=:@"  # quote() always keeps A-Za-z0-9 and '-._~'

_RAW_NAMES = {"\\": "a backslash", "#": "'#'", ";": "';' (path parameter)", "?": "'?'"}
_DECODED_NAMES = {
    "/": "encoded '/' (%2F)",
    "\\": "encoded '\\' (%5C)",
    "?": "encoded '?' (%3F)",
    "#": "encoded '#' (%23)",
    ";": "encoded ';' (%3B)",
    "\x00": "encoded NUL (%00)",
}


def split_target(raw_target: str) -> tuple[str, str]:
    """Split a raw request target into its raw path and raw query (without the '?').

    Accepts origin-form (``/a/b?x=1``) and absolute-form (``http://host:port/a/b?x=1``; an
    empty path is ``/``). The query is returned byte for byte, ``''`` when there is none.

    Raises:
        InvalidPath: for ``*`` (asterisk-form) or anything else that is not a path.
    """
    # APPSEC: the authority of an absolute-form target is ignored here; the caller decides
    # which host the request is for. Only the path part takes part in routing.
    if raw_target[:1] == "/":  # PERF: origin form, nearly every request: no authority in it
        path, _, query = raw_target.partition("?")
        return path, query
    authority = _SCHEME_AUTHORITY.match(raw_target)
    rest = raw_target[authority.end() :] if authority else raw_target
    if authority and rest[:1] in ("", "?"):
        rest = "/" + rest
    if not rest.startswith("/"):
        raise InvalidPath(f"request target {_show(raw_target)} is not a path")
    path, _, query = rest.partition("?")
    return path, query


def canonicalize(raw_path: str) -> str:
    """Return the canonical form of a raw (still percent-encoded) request path.

    Raises:
        InvalidPath: when the path cannot be made unambiguous; the message names the problem.

    Warning:
        Pass the raw path (gunicorn's ``RAW_URI`` via ``split_target``), never ``PATH_INFO``:
        that one is already decoded, and decoding twice is what this function guards against.
    """
    known = _CANONICAL.get(raw_path)
    if known is not None:
        return known
    if _PLAIN.fullmatch(raw_path) and "//" not in raw_path and "/." not in raw_path:
        canonical = raw_path
    else:
        canonical = _canonicalize_slow(raw_path)
    if len(raw_path) <= LONGEST_PATH_KEPT:
        remember(_CANONICAL, raw_path, canonical)
    return canonical


# PERF: the canonical forms of the paths met (a pure function of the raw path: a regex and
# two searches at least, 2,000 instructions, where a lookup is 300). APPSEC: clients choose
# the paths, so the table is bounded (``gw.core.bounded``: 1,024 paths of at most 256
# characters), and a refused path raises before it is kept.
_CANONICAL: dict[str, str] = {}


def encode_path(canonical: str) -> str:
    """Percent-encode a canonical path for an upstream request line (UTF-8, uppercase hex)."""
    if _PLAIN.fullmatch(canonical):
        return canonical  # PERF: nothing to encode in the common case
    return quote(canonical, safe=_SAFE_ON_WIRE)


def canonicalize_config(path: str) -> str:
    """Return the canonical form of a path written in configuration (a prefix, a literal).

    The path may be written as in a URL (``/my%20files``: decoded once) or already decoded
    (``/my files``, ``/café``, ``/100%``), so a canonical path is returned unchanged. A ``%``
    followed by two hex digits is always read as an escape.

    Raises:
        InvalidPath: when neither reading gives a valid path (the message is the URL reading's).
    """
    try:
        return canonicalize(path)
    except InvalidPath as ex:
        error = ex
    try:
        return canonicalize(encode_path(path))
    except InvalidPath:
        raise error from None


def _canonicalize_slow(raw_path: str) -> str:
    """Validate, decode and resolve a raw path segment by segment."""
    if not raw_path.startswith("/"):
        raise InvalidPath(f"path {_show(raw_path)} must start with '/'")
    _check_raw(raw_path)
    segments = [_decode_segment(raw) for raw in raw_path.split("/")[1:]]
    stack: list[str] = []
    for segment in segments:
        _push(stack, segment)
    # RFC 3986: a path ending in '/', '.' or '..' names a directory, so it keeps its '/'.
    trailing = segments[-1] in ("", ".", "..")
    if not stack:
        return "/"
    return "/" + "/".join(stack) + ("/" if trailing else "")


def _push(stack: list[str], segment: str) -> None:
    """Apply one decoded segment to the resolved stack (RFC 3986 section 5.2.4)."""
    if segment in ("", "."):
        return
    if segment != "..":
        stack.append(segment)
    elif stack:
        stack.pop()
    else:
        # APPSEC: clamping would hide an attack and make '/../admin' reach '/admin'.
        raise InvalidPath("'..' climbs above the root of the path")


def _check_raw(raw_path: str) -> None:
    """Reject raw characters that readers disagree about."""
    found = _RAW_FORBIDDEN.search(raw_path)
    if found is None:
        return
    char = found.group()
    if char in _RAW_NAMES:
        name = _RAW_NAMES[char]
    elif char == " ":
        name = "a raw space"
    elif char.isascii():
        name = f"raw control character {_codepoint(char)}"
    else:
        name = f"raw non-ASCII character {_codepoint(char)}"
    raise InvalidPath(f"{name} is not allowed in a path; percent-encode it")


def _decode_segment(raw_segment: str) -> str:
    """Percent-decode one raw segment exactly once and check what it decodes to."""
    if "%" not in raw_segment:
        return raw_segment
    if _BAD_PERCENT.search(raw_segment):
        raise InvalidPath("'%' must be followed by two hex digits")
    try:
        segment = unquote_to_bytes(raw_segment).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidPath("percent-encoded bytes are not valid UTF-8") from None
    found = _DECODED_FORBIDDEN.search(segment)
    if found is not None:
        raise InvalidPath(f"{_describe_decoded(found.group())} is not allowed in a path segment")
    return segment


def _describe_decoded(found: str) -> str:
    """Name a forbidden decoded character or double-encoded sequence for an error message."""
    if found.startswith("%"):
        return f"double encoding ({found!r} after decoding)"
    if found in _DECODED_NAMES:
        return _DECODED_NAMES[found]
    return f"encoded control character {_codepoint(found)}"


def _codepoint(char: str) -> str:
    """Format a character as U+XXXX."""
    return f"U+{ord(char):04X}"


def _show(text: str, limit: int = 60) -> str:
    """Quote client input for an error message: escaped and cut short."""
    shown = ascii(text[:limit])
    return shown + ("..." if len(text) > limit else "")
