"""The compiled forms of gw.upstream.wire (gw/upstream/_wire.c, gw/_collector.h)."""

from collections.abc import Mapping

from gw._collector import Collector as _Collector
from gw.upstream.wire import _PythonResponseState

Collector = _Collector[tuple[str, str]]  # its fields: gw/_collector.pyi

def request_head(
    method: str, target: str, headers: Mapping[str, str], host: str, chunked: bool, no_body: bool
) -> bytes | None: ...

class ResponseState(_PythonResponseState):
    """An answer's state (the attributes of wire._PythonResponseState, in a C struct) and
    llhttp's callbacks on it."""

    def on_message_begin(self) -> None: ...
    def on_headers_complete(self) -> None: ...
    def on_body(self, body: bytes) -> None: ...
    def on_message_complete(self) -> None: ...
    def take_usual(self, data: bytes, names: dict[bytes, str]) -> bool: ...
