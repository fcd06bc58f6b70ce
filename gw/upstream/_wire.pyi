"""The compiled forms of gw.upstream.wire (gw/upstream/_wire.c, gw/_collector.h)."""

from collections.abc import Mapping

import httptools

from gw._collector import Collector as _Collector
from gw.upstream.wire import MalformedResponse

Collector = _Collector[tuple[str, str]]  # its fields: gw/_collector.pyi

def request_head(
    method: str, target: str, headers: Mapping[str, str], host: str, chunked: bool, no_body: bool
) -> bytes | None: ...

class ResponseState:
    """An answer's state and llhttp's callbacks on it (wire._PythonResponseState's names)."""

    headers: list[tuple[str, str]]
    _chunks: list[bytes]
    _parser: httptools.HttpResponseParser
    _kept: Collector | None
    early: bytes
    _error: MalformedResponse | None
    status: int
    _interim: int
    complete: bool
    _head_done: bool
    _until_close: bool
    _keep_alive: bool
    _extra: bool
    _head_request: bool
    _upgrade: bool
    _switched: bool
    def on_message_begin(self) -> None: ...
    def on_headers_complete(self) -> None: ...
    def on_body(self, body: bytes) -> None: ...
    def on_message_complete(self) -> None: ...
