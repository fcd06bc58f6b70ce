"""One request's journey through the gateway: what ingress learned and what the log needs.

Pure module.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from gw.core.forwarding import ClientInfo
from gw.core.hosts import Authority


@dataclass(slots=True)
class Exchange:
    """Mutable per-request state, filled in stage by stage."""

    request_id: str
    method: str
    raw_target: str
    client: ClientInfo | None = None
    authority: Authority | None = None  # the effective host (gw.core.hosts)
    path: str = ""
    query: str = ""
    route: str | None = None
    upstream: str | None = None
    upstream_target: str | None = None
    status: int = 0
    error: str | None = None
    bytes_sent: int = 0
    # Headers the stages want on the response, whatever it turns out to be (errors included).
    add_headers: list[tuple[str, str]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    extra: dict[str, Any] = field(default_factory=dict)
    ended: float = 0.0  # time.monotonic() when its answer was done (gw.observe.batches)
    upstream_seconds: float | None = None  # until the proxied upstream's response headers

    def elapsed_ms(self) -> float:
        return (time.monotonic() - self.started) * 1000.0


@dataclass(slots=True)
class Outcome:
    """What the Falcon glue writes back: status, headers and a body that logs when closed."""

    status: int
    headers: list[tuple[str, str]]
    body: Iterable[bytes]


class ClosingBody:
    """Wrap a body iterator: count bytes, and run ``on_close`` once the server is done with it.

    The WSGI server calls ``close()`` after the last chunk, or early when the client went
    away; either way the exchange is logged exactly once and upstream resources are released.
    """

    __slots__ = ("_chunks", "_closed", "_exchange", "_on_close")

    def __init__(
        self, chunks: Iterable[bytes], exchange: Exchange, on_close: Callable[[], None]
    ) -> None:
        self._chunks = chunks
        self._exchange = exchange
        self._on_close = on_close
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self._exchange.bytes_sent += len(chunk)
            yield chunk

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()
            self._on_close()
