"""Connections to one target in one worker: idle keep-alive ones reused, a cap on those in use.

urllib3 makes every connection (connect timeouts, socket options, TLS for https targets), unless
a ``Connector`` (the transport seam) is given. Connections are made lazily in the process that
uses them, so a gunicorn worker never shares a socket with its master or a sibling.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import cast

from gevent import monkey
from urllib3.connection import HTTPConnection

from gw.upstream.connection import connect
from gw.upstream.spec import Target
from gw.upstream.tls import TlsClient

# gevent's monkey-patching takes ``select.poll`` away (it cannot wait cooperatively); a poll
# that does not wait never blocks the hub, so the original serves every worker model.
_POLL = monkey.get_original("select", "poll")
_READABLE = select.POLLIN | select.POLLPRI


Connector = Callable[[Target, float], HTTPConnection]
"""Make a new connection to a target within a connect timeout (the transport seam)."""


class PoolBusy(Exception):
    """Every connection slot of the target is in use and none freed up in time."""


class _Slots:
    """A cap on connections in use: ``take`` a slot (waiting up to a timeout), ``give`` it back.

    PERF: a free slot is an item of a deque, so the common case (a slot is free; nobody waits)
    is one atomic ``pop`` to take and one ``append`` to give, without a lock (a
    ``threading.BoundedSemaphore`` takes its condition's lock on both sides: get+put went from
    2.2 to 3.9 us in a micro-benchmark with it, and stay at 2.2 us with this). Only waiting
    uses the condition. A waiter registers under the condition's lock and then looks for a
    slot again before it sleeps, and a giver appends before it checks for waiters, so a slot
    given back is never missed (a taker arriving meanwhile may get it first, as with a
    semaphore; the waiter then waits on). Under gevent ``threading`` is monkey-patched, so a
    waiting greenlet yields to the others.
    """

    def __init__(self, count: int) -> None:
        self._free: deque[None] = deque([None] * count)
        self._waiters = 0
        self._given = threading.Condition(threading.Lock())

    def take(self, timeout: float) -> bool:
        """Take a slot; wait up to ``timeout`` seconds for one; tell whether one was taken."""
        try:
            self._free.pop()
        except IndexError:
            return self._wait(timeout)
        return True

    def give(self) -> None:
        self._free.append(None)
        if self._waiters:
            with self._given:
                self._given.notify()

    def _wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._given:
            self._waiters += 1
            try:
                while True:  # bounded by the deadline
                    try:
                        self._free.pop()
                    except IndexError:
                        pass
                    else:
                        return True
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._given.wait(remaining)
            finally:
                self._waiters -= 1


class ConnectionPool:
    """Connections to one target: idle keep-alive ones reused last-in first-out, and the
    count of those in use.

    Args:
        max_idle: idle connections kept (``pool_size``); more are closed when put back.
        tls: the upstream's TLS client for an https target (None: urllib3's defaults).
        idle_timeout: seconds an idle connection may wait for reuse; older ones are closed at
            the next ``get`` or ``put`` (no timer runs between requests). Keep it below the
            upstream's own keep-alive timeout, so that the gateway, not the upstream, closes
            an idle connection, and a request seldom races the upstream's close (the stale
            retry of ``gw.core.retry`` covers the rest).
        max_connections: connections in use at once (taken by ``get``, not yet ``put`` or
            ``discard``-ed) in this process; None: no cap. Over it, ``get`` waits for a slot
            up to its ``connect_timeout`` (connecting then has its own), a bounded queue as
            Node's http.Agent ``maxSockets`` queues (Envoy's circuit breaker and nginx's
            ``max_conns`` refuse at once), then raises ``PoolBusy`` (503 upstream_busy). A
            cap protects an upstream that falls over beyond N concurrent requests; it is per
            worker process, so the host's total is workers x max_connections.
    """

    def __init__(
        self,
        target: Target,
        max_idle: int,
        tls: TlsClient | None = None,
        idle_timeout: float = 4.0,
        max_connections: int | None = None,
        connect: Connector | None = None,
    ) -> None:
        self.target = target
        self._connector = connect
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        # PERF: deque.append/pop are atomic: no lock for greenlets or gthread threads.
        self._idle: deque[tuple[HTTPConnection, float]] = deque()
        self._tls = target.scheme == "https"
        self._tls_client = tls
        # PERF: no slots at all without a cap: nothing to count on the hot path.
        self._slots = _Slots(max_connections) if max_connections else None

    def get(self, connect_timeout: float) -> tuple[HTTPConnection, float | None]:
        """Return ``(connection, idle)``, connected: a live idle one with the seconds it was
        idle, or a new one with None. Give it back with ``put`` or ``discard``.

        Raises:
            PoolBusy: ``max_connections`` are in use and none was given back in time.
            NewConnectionError, ConnectTimeoutError, SSLError: a new connection failed.
        """
        if self._slots is not None and not self._slots.take(connect_timeout):
            raise PoolBusy
        try:
            return self._reuse() or (self._new(connect_timeout), None)
        except BaseException:
            self._release()
            raise

    def put(self, conn: HTTPConnection) -> None:
        """Give back a connection after a complete exchange: keep it for reuse, or close it."""
        now = time.monotonic()
        idle = self._idle
        # PERF: one comparison (the oldest idle connection's age) unless some have expired.
        if idle and now - idle[0][1] >= self.idle_timeout:
            self._close_expired(now)
        if len(idle) >= self.max_idle or conn.sock is None:
            conn.close()
        else:
            idle.append((conn, now))
        if self._slots is not None:  # PERF: _release inline here and in discard (every request)
            self._slots.give()

    def discard(self, conn: HTTPConnection) -> None:
        """Close a connection that must not be reused (failed or half-read exchange)."""
        conn.close()
        if self._slots is not None:
            self._slots.give()

    def _reuse(self) -> tuple[HTTPConnection, float] | None:
        """Pop the newest live idle connection younger than ``idle_timeout``, if any."""
        now = time.monotonic()
        while self._idle:
            try:
                conn, since = self._idle.pop()
            except IndexError:
                break
            idle = now - since
            # PERF: one float comparison; last-in first-out, so when the newest idle
            # connection is too old every other one is too.
            if idle >= self.idle_timeout:
                conn.close()
                self._close_expired(now)
                break
            sock = conn.sock
            # PERF: _nothing_to_read's plain-connection question asked inline (every request)
            if sock is not None and (
                _nothing_to_read(sock, True)
                if self._tls
                else (fd := sock.fileno()) >= 0 and _quiet(fd)
            ):
                return conn, idle
            conn.close()
        return None

    def _new(self, connect_timeout: float) -> HTTPConnection:
        if self._connector is not None:
            return self._connector(self.target, connect_timeout)
        return self._connect(connect_timeout)

    def _connect(self, connect_timeout: float) -> HTTPConnection:
        target = self.target
        return connect(target.scheme, target.host, target.port, self._tls_client, connect_timeout)

    def _close_expired(self, now: float) -> None:
        """Close the idle connections older than ``idle_timeout``, oldest first."""
        idle = self._idle
        while idle and now - idle[0][1] >= self.idle_timeout:
            try:
                conn, since = idle.popleft()
            except IndexError:
                return
            if now - since < self.idle_timeout:  # another thread took the old one first
                idle.appendleft((conn, since))
                return
            conn.close()

    def _release(self) -> None:
        if self._slots is not None:
            self._slots.give()


def _nothing_to_read(sock: socket.socket, tls: bool) -> bool:
    """Return whether an idle kept-alive connection is clean: no bytes pending, no EOF.

    APPSEC: between two exchanges a kept-alive upstream connection must be silent. Anything
    readable now (bytes after a complete answer, a HEAD answered with a body, a 204 followed
    by more, or the upstream's close) would be read as the next client's answer, so such a
    connection is closed and never reused, whatever its age; nginx's upstream keepalive
    module does the same. A close or bytes racing this check are still possible, as there.
    For TLS the poll sees records not yet decrypted (any record closes the connection:
    late answer bytes and a close_notify must, and a harmless one costs only a reconnect),
    and ``pending()`` what is decrypted but not yet read.

    PERF: one ``poll`` that does not wait, on the socket's descriptor: about 0.5 µs, against
    1.8 µs for the ``recv(1, MSG_PEEK | MSG_DONTWAIT)`` it replaced, most of which was the
    ``BlockingIOError`` that a clean connection raised. ``poll`` reports an error or a hang-up
    whatever it is asked, and a closed descriptor as ``POLLNVAL``: each spoils the
    connection. ``tls`` spares plain connections the ``pending`` lookup, which on a gevent
    socket is a trip through its ``__getattr__``.
    """
    if tls and cast(ssl.SSLSocket, sock).pending():
        return False
    fd = sock.fileno()
    return fd >= 0 and _quiet(fd)


def _quiet_here(fd: int) -> bool:
    """Whether a ``poll`` of ``fd`` that does not wait reports nothing (the Python form)."""
    poller = _POLL()
    poller.register(fd, _READABLE)
    return not poller.poll(0)


# PERF: the compiled form makes the poll(2) call itself, without a poll object to make,
# register and free (gw/host/_io.c); the same question and answer.
_quiet: Callable[[int], bool]
try:
    from gw.host._io import quiet as _quiet
except ImportError:  # built without a C compiler (setup.py: optional)
    _quiet = _quiet_here
