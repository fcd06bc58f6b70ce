"""The compiled forms of the edge's passes over a request's head (gw/edge/_requestfields.c)."""

from collections import deque
from collections.abc import Callable
from typing import Any

from gw._collector import Collector as _Collector
from gw.edge.request import Message as _Message

Collector = _Collector[tuple[bytes, bytes]]  # its fields: gw/_collector.pyi
# Typed as gw.edge.request.Message: not a subclass of it, but the same attributes.
Message: type[_Message]

class Callbacks:
    def __init__(
        self,
        conn: object,
        messages: deque[_Message],
        kept: object,
        request_line: int,
        field_size: int,
        fields: int,
        *,
        on_url: Callable[[bytes], None],
        on_headers_complete: Callable[[], None],
        on_message_complete: Callable[[], None],
    ) -> None: ...
    def on_message_begin(self) -> None: ...
    def on_url(self, url: bytes, /) -> None: ...
    def on_headers_complete(self) -> None: ...
    def on_message_complete(self) -> None: ...
    def take(self, data: bytes, /) -> bool: ...

def configure(
    headers_type: Callable[[list[tuple[str, str]], dict[str, str]], Any],
    headers_key: str,
    cgi: tuple[tuple[str, str, str], ...],
    absolute_path: Callable[[str], str],
    decoded_path: Callable[[str], str],
) -> None: ...
def environ(
    base: dict[str, Any],
    headers: list[tuple[bytes, bytes]],
    names: dict[bytes, tuple[str, str, str]],
    url: bytes,
    method: str,
    version: str,
) -> dict[str, Any] | None: ...
