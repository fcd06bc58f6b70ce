"""The compiled forms of gw.upstream.wire (gw/upstream/_wire.c, gw/_collector.h)."""

from collections.abc import Callable, Mapping

class Collector:
    fields: list[tuple[str, str]] | None
    def __init__(
        self,
        slow: Callable[[bytes, bytes], None],
        size: int,
        count: int,
        names: dict[bytes, str] | None = None,
    ) -> None: ...
    def __call__(self, name: bytes, value: bytes) -> None: ...

def request_head(
    method: str, target: str, headers: Mapping[str, str], host: str, chunked: bool, no_body: bool
) -> bytes | None: ...
