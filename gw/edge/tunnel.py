"""Upgrade tunnels (WebSocket): the edge's side of a switched protocol.

The edge owns the client's socket; the pipeline owns the upstream's. An upgrade request gets a
``Switch`` in its environ (``SWITCH``). The pipeline, for a route that allows the upgrade,
``reserve``-s a place under the worker's cap before it connects, and ``offer``-s a ``Tunnel``
once the upstream has answered 101. After writing the 101 head the edge relays bytes both ways
(``gw.edge.relay``). The edge never imports the pipeline: a ``Tunnel`` is the whole contract.
This module loads nothing of gevent, so the pipeline may import it under any worker.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

from gw.core.ingress import SWITCH as SWITCH  # the environ key of an upgrade's Switch

_lock = threading.Lock()
_reserved = 0  # tunnels of this worker: open, or being opened (a handshake under way)


def open_count() -> int:
    """Tunnels this worker has open or is opening."""
    return _reserved


@dataclass(slots=True)
class Tunnel:
    """An upstream connection that switched protocols, for the edge to relay.

    ``early``: bytes the upstream sent after its 101 head (sent to the client first).
    ``close``: closes the upstream connection (never pooled again) and does the pipeline's
    bookkeeping; the edge calls it exactly once, whether the tunnel ran or not.
    """

    sock: socket.socket
    protocol: str
    idle_timeout: float
    max_lifetime: float
    close: Callable[[], None]
    early: bytes = b""


class Switch:
    """One upgrade request's link between the pipeline and the edge."""

    __slots__ = ("_reserved", "tunnel")

    def __init__(self) -> None:
        self.tunnel: Tunnel | None = None
        self._reserved = False

    def reserve(self, cap: int) -> bool:
        """Take a place among this worker's ``cap`` tunnels; False when all are taken."""
        global _reserved
        if self._reserved:
            return True
        with _lock:
            if _reserved >= cap:
                return False
            _reserved += 1
        self._reserved = True
        return True

    def offer(self, tunnel: Tunnel) -> None:
        """Hand over an upstream that answered 101: relayed once the 101 head is written."""
        self.tunnel = tunnel

    def finish(self) -> None:
        """Close the tunnel (if any) and give its place back; the edge calls this last."""
        global _reserved
        tunnel, self.tunnel = self.tunnel, None
        try:
            if tunnel is not None:
                tunnel.close()
        finally:
            if self._reserved:
                self._reserved = False
                with _lock:
                    _reserved -= 1
