"""Rewrite a canonical request path into the path sent upstream.

Pure module. A rewrite works on canonical (decoded) paths from ``gw.core.paths.canonicalize`` and
returns a canonical path; the caller re-encodes it with ``gw.core.paths.encode_path`` for the
request
line. Prefixes are canonical too: ``validate_prefix`` turns a configured prefix into that form.

Trailing slash: the result ends with ``/`` exactly when the input did, so ``/api/x/`` stripped
of ``/api`` is ``/x/``, and ``/api/`` is ``/`` (then ``/base/`` under a ``target_prefix`` of
``/base``). The root path ``/`` is the one exception: it stands for "no segments", so with a
``target_prefix`` of ``/base`` it becomes ``/base``, not ``/base/``; likewise ``/api`` stripped
of ``/api`` becomes ``/`` (or ``/base``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gw.core.paths import canonicalize_config
from gw.errors import InvalidPath


def validate_prefix(prefix: str) -> str:
    """Return the canonical (decoded) form of a configured path prefix.

    A prefix is ``/`` followed by segments, written as in a URL (``/my%20files``) or already
    decoded (``/my files``), with no empty, ``.`` or ``..`` segment and no trailing ``/``; ``/``
    alone is the root. A canonical prefix is returned unchanged.

    Raises:
        ValueError: with a readable message when the prefix is not of that form.
    """
    if not prefix.startswith("/"):
        raise ValueError(f"prefix {prefix!r} must start with '/'")
    if prefix == "/":
        return prefix
    if prefix.endswith("/"):
        raise ValueError(f"prefix {prefix!r} must not end with '/'; write {prefix.rstrip('/')!r}")
    if "//" in prefix:
        raise ValueError(f"prefix {prefix!r} has an empty segment ('//')")
    try:
        canonical = canonicalize_config(prefix)
    except InvalidPath as ex:
        raise ValueError(f"prefix {prefix!r}: {ex.message}") from None
    # A dot segment is the only thing that changes the segment count or adds a trailing '/'.
    if canonical.endswith("/") or canonical.count("/") != prefix.count("/"):
        raise ValueError(f"prefix {prefix!r} must not contain '.' or '..' segments")
    return canonical


@dataclass(frozen=True)
class Rewrite:
    """How a route turns the canonical client path into the upstream path.

    ``strip_prefix`` removes a leading prefix (``/api``: ``/api/orders/x`` -> ``/orders/x``),
    ``replace_prefix`` swaps one (``("/api/v1", "/v2")``: ``/api/v1/u`` -> ``/v2/u``; a
    replacement of ``""`` or ``/`` strips); set at most one. Prefixes match whole segments only
    (``/api`` does not match ``/apix``), and a path without the prefix is left unchanged.
    ``target_prefix`` (the base path of the upstream URL, ``""`` for none) is prepended last.
    Prefixes are normalized by ``validate_prefix``.
    """

    strip_prefix: str | None = None
    replace_prefix: tuple[str, str] | None = None
    target_prefix: str = ""
    # PERF: the precomputed parts make ``apply`` a few string operations.
    _old: str = field(init=False, repr=False, compare=False, default="")
    _new: str = field(init=False, repr=False, compare=False, default="")
    _target: str = field(init=False, repr=False, compare=False, default="")
    # No prefix to strip, replace or add: ``apply`` returns the path as it is (PERF: callers
    # may skip the call).
    identity: bool = field(init=False, repr=False, compare=False, default=True)

    def __post_init__(self) -> None:
        if self.strip_prefix is not None and self.replace_prefix is not None:
            raise ValueError("set strip_prefix or replace_prefix, not both")
        if self.strip_prefix is not None:
            self._set("strip_prefix", validate_prefix(self.strip_prefix))
            self._set("_old", _body(self.strip_prefix))
        if self.replace_prefix is not None:
            old, new = (validate_prefix(prefix or "/") for prefix in self.replace_prefix)
            self._set("replace_prefix", (old, new))
            self._set("_old", _body(old))
            self._set("_new", _body(new))
        if self.target_prefix:
            self._set("target_prefix", validate_prefix(self.target_prefix))
            self._set("_target", _body(self.target_prefix))
        self._set("identity", not (self.strip_prefix or self.replace_prefix or self._target))

    def apply(self, canonical_path: str) -> str:
        """Return the upstream path (canonical, not yet encoded) for a canonical path."""
        body = _body(canonical_path)
        old = self._old
        if old and (body == old or (body.startswith(old) and body[len(old)] == "/")):
            body = self._new + body[len(old) :]
        elif not old and (self.strip_prefix or self.replace_prefix):
            body = self._new + body  # the root prefix '/' matches every path
        return (self._target + body) or "/"

    def _set(self, name: str, value: object) -> None:
        """Set a field of this frozen instance during initialization."""
        object.__setattr__(self, name, value)


def _body(path: str) -> str:
    """Return a path without its root: '' for '/', the path itself otherwise."""
    return "" if path == "/" else path
