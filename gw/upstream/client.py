"""The upstream adapter: kept-alive urllib3 connections per target, and the one place where
connection, socket and protocol failures become gateway errors.

urllib3 makes every connection (connect timeouts, socket options, TLS for https targets); the
messages on it are written and read by ``gw.upstream.wire``.

PERF: requests go straight to pooled ``urllib3.connection.HTTPConnection`` objects rather than
through ``HTTPConnectionPool.urlopen``. urlopen re-parses and re-encodes every URL (which also
rewrites ``%2f`` to ``%2F`` in the query, breaking the byte-for-byte promise) and costs more CPU
than the request itself on a small proxied call. The gateway needs none of what it adds: no
redirects, no retries, one fixed target per pool.

Connections are made lazily in the process that uses them, so a gunicorn worker never shares a
socket with its master or a sibling.
"""

from __future__ import annotations

import _socket
import logging
import os
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import cast

from urllib3.connection import HTTPConnection
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    SSLError,
)

from gw.core.retry import (
    CONNECT_FAILURE,
    RESET,
    STALE,
    STALE_IDLE_SECONDS,
    STATUS,
    TIMEOUT,
    RetryBudget,
    RetryPolicy,
)
from gw.errors import (
    UpstreamBadResponse,
    UpstreamBusy,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gw.upstream.choice import CANCELLED, Choice, Picker
from gw.upstream.connection import connect
from gw.upstream.spec import Target, UpstreamSpec
from gw.upstream.tls import TlsClient
from gw.upstream.wire import (
    Body,
    BodyBrokenOff,
    MalformedResponse,
    Response,
    UpstreamClosed,
    request_head,
    send_request,
)

log = logging.getLogger("gw.upstream")
NO_RETRIES = RetryPolicy(attempts=1)

_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT
# The C socket's recv: gevent's monkey-patching replaces ``socket.socket``, never ``_socket``.
_RAW_RECV = _socket.socket.recv
_TRANSPORT_ERRORS = (HTTPError, OSError, MalformedResponse, BodyBrokenOff)
_STALE = (UpstreamClosed, ConnectionResetError, BrokenPipeError)
# Every connection slot of the target was in use: never retried (another wait would only
# delay the 503), and not held against the target's health.
BUSY = "busy"
# Failed tries that say nothing about the target: a stale reuse raced the upstream's close;
# the gateway's own cap was reached.
_NOT_THE_TARGETS_FAULT = frozenset({STALE, BUSY})


Connector = Callable[[Target, float], HTTPConnection]
"""Make a new connection to a target within a connect timeout (the transport seam)."""


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """One request for an upstream, framed by gw (``gw.upstream.wire``) whatever the client
    sent: ``path`` is origin-form (query included), ``chunked`` says how ``body`` is framed
    when ``headers`` carry no Content-Length. Deadlines are ``time.monotonic()`` seconds:
    ``deadline`` for the answer's head (retries included), ``body_deadline`` for its body."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: Body = None
    chunked: bool = False
    read_timeout: float | None = None
    policy: RetryPolicy = NO_RETRIES
    deadline: float | None = None
    body_deadline: float | None = None
    balance_key: str | None = None


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
            # PERF: an idle socket is kept non-blocking so that ``_nothing_to_read`` is one
            # recv; with a timeout set, CPython polls for readability before every recv and
            # would wait that whole timeout on a clean connection. ``_exchange`` sets the read
            # timeout again. (Under gevent this is an attribute; the real socket is always
            # non-blocking.)
            conn.sock.settimeout(0.0)
            idle.append((conn, now))
        self._release()

    def discard(self, conn: HTTPConnection) -> None:
        """Close a connection that must not be reused (failed or half-read exchange)."""
        conn.close()
        self._release()

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
            if conn.sock is not None and _nothing_to_read(conn.sock, self._tls):
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
    For TLS the raw peek sees records not yet decrypted (any record closes the connection:
    late answer bytes and a close_notify must, and a harmless one costs only a reconnect),
    and ``pending()`` what is decrypted but not yet read.

    PERF: one non-blocking ``recv(1, MSG_PEEK | MSG_DONTWAIT)`` syscall on the real socket
    (about 3 µs with the EAGAIN it raises on a clean one; ``tls`` spares plain connections the
    ``pending`` lookup, which on a gevent socket is a trip through its ``__getattr__``).
    It is called unbound on the C socket type (``_socket.socket``) so that neither
    ``ssl.SSLSocket.recv`` (which refuses flags) nor gevent's wrapper (which waits in the hub
    on EAGAIN) comes in between; gevent keeps the real, non-blocking socket in ``_sock``.
    """
    if tls and cast(ssl.SSLSocket, sock).pending():
        return False
    raw = getattr(sock, "_sock", sock)
    try:
        _RAW_RECV(raw, 1, _PEEK)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False  # a byte to read, or b"": the upstream closed


class UpstreamResponse:
    """An upstream answer whose body has not been read yet."""

    def __init__(self, raw: Response, conn: HTTPConnection, pool: ConnectionPool) -> None:
        self.raw = raw
        self.target = pool.target
        self.status = raw.status
        self.headers = raw.headers
        self._conn: HTTPConnection | None = conn
        self._pool = pool
        self.choice: Choice | None = None  # told how the exchange ended (health)
        self.deadline: float | None = None  # time.monotonic() by which the body must be in

    def body(self) -> Iterator[bytes]:
        """Yield the body as it arrives, undecoded; raise UpstreamError if it breaks off."""
        try:
            yield from self.raw.body(self.deadline)
        except _TRANSPORT_ERRORS as ex:
            error = translate(ex, self.target, reading_body=True)
            if self.choice is not None:
                self.choice.failed(error)
            self.abandon()
            raise error from None
        if self.choice is not None:
            self.choice.answered(self.status)
        if self._conn is not None:
            if self.raw.reusable:
                self._pool.put(self._conn)
            else:
                self._pool.discard(self._conn)
            self._conn = None

    def abandon(self) -> None:
        """Close the connection: a half-read response must never be reused."""
        if self.choice is not None:
            self.choice.done(False, CANCELLED)  # neutral; ignored if the outcome is known
        self.raw.close()
        if self._conn is not None:
            self._pool.discard(self._conn)
            self._conn = None

    @property
    def finished(self) -> bool:
        return self._conn is None


class Attempt(Exception):
    """One failed try: the gateway error to report and the retry module's failure kind."""

    def __init__(self, error: UpstreamError, kind: str) -> None:
        super().__init__(error.message)
        self.error = error
        self.kind = kind


class UpstreamClient:
    """Send requests to one upstream's targets over kept-alive connections, retrying safely."""

    def __init__(
        self,
        spec: UpstreamSpec,
        balancer: Picker,
        budget: RetryBudget | None = None,
        on_retry: Callable[[str], None] | None = None,
        connect: Connector | None = None,
    ) -> None:
        """``balancer`` picks the target of each try (the health package's ``for_upstream``).
        ``connect``: how a pool makes a new connection to a target (default: TCP, and TLS by
        the upstream's settings); tests pass a fake transport here."""
        self.spec = spec
        self.balancer = balancer
        self.budget = budget or RetryBudget()
        self.on_retry = on_retry or _ignore  # told "attempted" or "budget_exhausted"
        self.connect = connect
        self._pid = -1
        self._pools: tuple[ConnectionPool, ...] = ()
        self.hash_source = spec.health.hash_source() if spec.health else None

    def send(self, request: UpstreamRequest) -> UpstreamResponse:
        """Send one request and return the final attempt's answer.

        The balancer picks the target (skipping ejected ones; ``balance_key`` for hashing);
        failed tries are repeated as ``policy`` allows (see ``gw.core.retry``) on another
        target, within the retry budget and before ``deadline``. Every outcome is reported to
        the shared health state. Never follows redirects.

        Raises:
            UpstreamError: the last try was refused, reset, timed out or not valid HTTP, every
                target is ejected (503 no_healthy_target), or the breaker is open (503).
        """
        policy, deadline = request.policy, request.deadline
        self.budget.record_request()
        has_body = request.body is not None
        method = request.method
        attempt = 1
        tried: list[int] = []
        while True:
            timeout = _bounded(
                policy.per_try_timeout or request.read_timeout or self.spec.read_timeout, deadline
            )
            pools = self._local()
            choice = self.balancer.pick(request.balance_key, avoid=tried)
            tried.append(choice.target_index)
            try:
                response = self._attempt(pools[choice.target_index], request, timeout)
            except Attempt as failed:
                if failed.kind in _NOT_THE_TARGETS_FAULT:
                    choice.done(False, CANCELLED)
                else:
                    choice.failed(failed.error)
                if not self._retry(policy, attempt, method, has_body, failed.kind, None, deadline):
                    raise failed.error from None
            else:
                response.choice = choice
                response.deadline = request.body_deadline
                if response.status not in policy.statuses or not self._retry(
                    policy,
                    attempt,
                    method,
                    has_body,
                    STATUS,
                    _header(response.headers, "retry-after"),
                    deadline,
                ):
                    return response
                choice.answered(response.status)
                response.abandon()
            attempt += 1

    def _retry(
        self,
        policy: RetryPolicy,
        attempt: int,
        method: str,
        has_body: bool,
        kind: str,
        retry_after: str | None,
        deadline: float | None,
    ) -> bool:
        """Decide on another try; wait its delay when the answer is yes."""
        if not policy.may_retry(attempt, method, has_body, kind):
            return False
        delay = policy.delay(attempt, retry_after)
        if delay is None or (deadline is not None and time.monotonic() + delay >= deadline):
            return False
        if not self.budget.try_spend():
            log.warning("retry budget of upstream %s is used up; not retrying", self.spec.name)
            self.on_retry("budget_exhausted")
            return False
        self.on_retry("attempted")
        time.sleep(delay)
        return True

    def _attempt(
        self,
        pool: ConnectionPool,
        request: UpstreamRequest,
        read_timeout: float,
    ) -> UpstreamResponse:
        """One try on one target (one delivery at most).

        Raises:
            Attempt: the try failed; its kind is ``STALE`` when a reused connection that had
                been idle for ``STALE_IDLE_SECONDS`` closed before any byte of the answer
                (the upstream's keep-alive timeout raced this request: see ``gw.core.retry``).
        """
        connect_timeout = min(self.spec.connect_timeout, read_timeout)
        try:
            conn, idle = pool.get(connect_timeout)
        except PoolBusy:
            raise Attempt(_busy(pool.target), BUSY) from None
        except _TRANSPORT_ERRORS as ex:
            raise Attempt(translate(ex, pool.target, reading_body=False), _kind(ex)) from None
        try:
            return self._exchange(conn, pool, request, read_timeout)
        except _TRANSPORT_ERRORS as ex:
            pool.discard(conn)
            stale = idle is not None and idle >= STALE_IDLE_SECONDS and _is_stale(ex)
            kind = STALE if stale else _kind(ex)
            raise Attempt(translate(ex, pool.target, reading_body=False), kind) from None
        except BaseException:
            # APPSEC: the request broke off mid-message (the client's body failed): the
            # upstream is still waiting for bytes, so the connection is never reused.
            pool.discard(conn)
            raise

    @staticmethod
    def _exchange(
        conn: HTTPConnection,
        pool: ConnectionPool,
        request: UpstreamRequest,
        read_timeout: float,
    ) -> UpstreamResponse:
        body, chunked = request.body, request.chunked
        head = request_head(
            request.method, request.path, request.headers, pool.target.netloc, chunked, body is None
        )
        sock = conn.sock
        assert sock is not None  # connected by the pool
        sock.settimeout(read_timeout)
        send_request(sock, head, body, chunked)
        return UpstreamResponse(Response(sock, request.method == "HEAD"), conn, pool)

    def _local(self) -> tuple[ConnectionPool, ...]:
        """This process's pools, made after the fork."""
        if self._pid != os.getpid():
            spec = self.spec
            self._pools = tuple(
                ConnectionPool(
                    t,
                    spec.pool_size,
                    spec.tls,
                    spec.idle_timeout,
                    spec.max_connections,
                    connect=self.connect,
                )
                for t in spec.targets
            )
            self._pid = os.getpid()
        return self._pools


def _ignore(outcome: str) -> None:
    pass


def _bounded(timeout: float, deadline: float | None) -> float:
    if deadline is None:
        return timeout
    return max(0.001, min(timeout, deadline - time.monotonic()))


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    return next((v for n, v in headers if n.lower() == name), None)


def _busy(target: Target) -> UpstreamBusy:
    return UpstreamBusy(
        f"upstream {target} has all its connections of this worker in use (max_connections)"
    )


def _kind(ex: Exception) -> str:
    """Classify a failed try for the retry policy."""
    if isinstance(ex, ConnectTimeoutError):  # NewConnectionError included: nothing was sent
        return CONNECT_FAILURE
    if isinstance(ex, TimeoutError):
        return TIMEOUT
    return RESET


def _is_stale(ex: Exception) -> bool:
    return isinstance(ex, _STALE)


def translate(ex: Exception, target: Target, reading_body: bool) -> UpstreamError:
    """Map a connection, socket or protocol failure onto the gateway's error categories."""
    where = f"upstream {target}"
    if isinstance(ex, NewConnectionError):
        return UpstreamUnavailable(f"{where} refused the connection or is unreachable")
    if isinstance(ex, ConnectTimeoutError):
        return UpstreamTimeout(f"{where} did not accept the connection in time")
    if isinstance(ex, TimeoutError):
        return UpstreamTimeout(f"{where} did not answer in time")
    if reading_body:
        return UpstreamBadResponse(f"{where} broke off the response body")
    if isinstance(ex, UpstreamClosed):
        return UpstreamUnavailable(f"{where} closed the connection without answering")
    if isinstance(ex, MalformedResponse):
        return UpstreamBadResponse(f"{where} answered with something that is not valid HTTP")
    if isinstance(ex, (SSLError, ssl.SSLError)):
        # An ssl.SSLError on the first read: TLS 1.3 servers refuse a client certificate
        # (or its absence) after the client's side of the handshake is done.
        return UpstreamUnavailable(f"{where}: TLS handshake failed")
    return UpstreamUnavailable(f"{where}: connection failed ({type(ex).__name__})")
