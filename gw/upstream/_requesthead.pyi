"""The compiled form of gw.upstream.wire's request head (gw/upstream/_requesthead.c)."""

from collections.abc import Mapping

def request_head(
    method: str, target: str, headers: Mapping[str, str], host: str, chunked: bool, no_body: bool
) -> bytes | None: ...
