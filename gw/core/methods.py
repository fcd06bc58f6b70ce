"""The HTTP methods a route or a rate-limit override may name.

Pure module: standard library only.
"""

from __future__ import annotations

HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)


def upper_methods(value: list[str] | None) -> list[str] | None:
    """Upper-case a ``methods:`` list (a pydantic field validator).

    Raises:
        ValueError: an unknown method, or an empty list.
    """
    if value is None:
        return None
    methods = [m.upper() for m in value]
    unknown = sorted(set(methods) - HTTP_METHODS)
    if unknown:
        raise ValueError(f"unknown HTTP method(s) {unknown} (known: {sorted(HTTP_METHODS)})")
    if not methods:
        raise ValueError("must list at least one method (omit the key to allow every method)")
    return methods
