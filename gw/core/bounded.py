"""Tables a worker keeps of what clients and upstreams choose: header names, paths, matches.

Pure module. APPSEC: clients choose their header names and paths, so every such table holds at
most ``KEPT`` entries, and one keyed by a path none longer than ``LONGEST_PATH_KEPT``
characters: what a worker spends on them is bounded whatever it is sent.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TypeVar

KEPT = 1024
LONGEST_PATH_KEPT = 256

Key = TypeVar("Key", bound=Hashable)
Value = TypeVar("Value")


def remember(table: dict[Key, Value], key: Key, value: Value) -> Value:
    """Keep ``value`` under ``key`` while ``table`` holds fewer than ``KEPT``; return it.

    For the tables read with one ``dict.get`` on the request path, where an ``lru_cache``
    call costs 170-330 instructions more a lookup. A full table keeps what it has, and what
    comes later is worked out each time.
    """
    if len(table) < KEPT:
        table[key] = value
    return value
