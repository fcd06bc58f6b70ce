"""The bytes of a tunnel (``gw.edge.tunnel``), relayed both ways in two greenlets (so only
under gevent's monkey-patching: gw's default worker).

A tunnel ends when either side closes (the other is then closed too), when it is idle or old
(``Tunnel.idle_timeout``, ``Tunnel.max_lifetime``), or when the worker stops.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable

import gevent

from gw.edge.tunnel import Tunnel

log = logging.getLogger("gw.serve")

CHUNK = 64 * 1024
# PERF: each direction wakes this often to look at the clock and the worker's state: 2 wakeups
# a second per open tunnel, instead of a timer per read.
POLL = 1.0
# After one side has closed, how long the other may take to close too (the rest of its
# bytes are still relayed meanwhile).
CLOSING_GRACE = 5.0


class _Relay:
    """The state both directions of one tunnel share: clocks, and why it ended."""

    def __init__(self, tunnel: Tunnel, running: Callable[[], bool]) -> None:
        now = time.monotonic()
        self.idle_timeout = tunnel.idle_timeout
        self.started = self.last = now
        self.ends = now + tunnel.max_lifetime
        self.running = running
        self.closing: float | None = None  # when the first side closed
        self.reason = ""
        self.sent = [0, 0]  # bytes to the upstream, bytes to the client

    def wait(self) -> bool:
        """Whether to go on; sets ``reason`` when the tunnel must end now."""
        now = time.monotonic()
        if now >= self.ends:
            self.reason = self.reason or "max_lifetime"
        elif now - self.last >= self.idle_timeout:
            self.reason = self.reason or "idle_timeout"
        elif self.closing is not None and now - self.closing >= CLOSING_GRACE:
            self.reason = self.reason or "closed"
        elif not self.running():
            self.reason = self.reason or "worker_stopping"
        return not self.reason


def relay(client: socket.socket, rest: bytes, tunnel: Tunnel, running: Callable[[], bool]) -> str:
    """Pass bytes both ways between ``client`` and ``tunnel.sock``; return why it ended.

    ``rest``: bytes the client sent after its request head (sent upstream first). Ends when
    both sides have closed (the second within ``CLOSING_GRACE`` of the first), on an error,
    after ``idle_timeout`` seconds without a byte either way, after ``max_lifetime``, or when
    ``running()`` says the worker stops. Both sockets are shut down on the way out (the caller
    closes them).
    """
    state = _Relay(tunnel, running)
    upstream = tunnel.sock
    client.settimeout(POLL)
    upstream.settimeout(POLL)
    down = gevent.spawn(_pump, upstream, client, state, 1, tunnel.early)
    try:
        _pump(client, upstream, state, 0, rest)
        down.join(timeout=CLOSING_GRACE + POLL)
    finally:
        for sock in (client, upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        down.kill(block=True, timeout=POLL)
    log.info(
        "tunnel (%s) ended: %s after %.1f s, %d bytes up, %d bytes down",
        tunnel.protocol,
        state.reason or "closed",
        time.monotonic() - state.started,
        *state.sent,
    )
    return state.reason or "closed"


def _pump(src: socket.socket, dst: socket.socket, state: _Relay, way: int, first: bytes) -> None:
    """Copy ``src`` to ``dst`` until ``src`` closes or the tunnel ends; then half-close ``dst``.

    An end other than a close (a timeout, an error, the worker stopping) shuts both sockets
    down, so that the other direction ends at once too.
    """
    try:
        if first and not _send(dst, first, state, way):
            return _cut(src, dst)
        while state.wait():
            try:
                data = src.recv(CHUNK)
            except TimeoutError:
                continue
            if not data:
                if state.closing is None:
                    state.closing = time.monotonic()
                if _is_tls(dst):
                    # A TLS socket drops its TLS layer on any shutdown: the other direction
                    # would then read raw records. The tunnel ends here instead.
                    state.reason = state.reason or "closed"
                    break
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)  # the other side learns of the close
                return
            state.last = time.monotonic()
            if not _send(dst, data, state, way):
                break
    except OSError as ex:
        state.reason = state.reason or f"socket error ({ex})"
    _cut(src, dst)


def _send(dst: socket.socket, data: bytes, state: _Relay, way: int) -> bool:
    """Send all of ``data``, waiting in ``POLL`` steps; False when the tunnel ended first.

    Raises:
        OSError: the receiver went away.
    """
    view = memoryview(data)
    while view:
        try:
            view = view[dst.send(view) :]
        except TimeoutError:
            if not state.wait():
                return False
            continue
        state.last = time.monotonic()
    state.sent[way] += len(data)
    return True


def _is_tls(sock: socket.socket) -> bool:
    return hasattr(sock, "cipher")  # ssl.SSLSocket and gevent's, which is not a subclass


def _cut(*socks: socket.socket) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
