"""The upstream adapter: requests sent with retries, and where transport failures become errors.

Each try takes a kept-alive connection from the target's pool (``gw.upstream.pool``); the
messages on it are written and read by ``gw.upstream.wire``. This is the one place where
connection, socket and protocol failures become gateway errors.

PERF: requests go straight to pooled ``urllib3.connection.HTTPConnection`` objects rather than
through ``HTTPConnectionPool.urlopen``. urlopen re-parses and re-encodes every URL (which also
rewrites ``%2f`` to ``%2F`` in the query, breaking the byte-for-byte promise) and costs more CPU
than the request itself on a small proxied call. The gateway needs none of what it adds: no
redirects, no retries, one fixed target per pool.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from typing import NamedTuple

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
from gw.host import process
from gw.upstream.choice import CANCELLED, Choice, Picker
from gw.upstream.pool import ConnectionPool, Connector, PoolBusy
from gw.upstream.spec import Target, UpstreamSpec
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

_TRANSPORT_ERRORS = (HTTPError, OSError, MalformedResponse, BodyBrokenOff)
_STALE = (UpstreamClosed, ConnectionResetError, BrokenPipeError)
# Every connection slot of the target was in use: never retried (another wait would only
# delay the 503), and not held against the target's health.
BUSY = "busy"
# Failed tries that say nothing about the target: a stale reuse raced the upstream's close;
# the gateway's own cap was reached.
_NOT_THE_TARGETS_FAULT = frozenset({STALE, BUSY})


class UpstreamRequest(NamedTuple):
    """One request for an upstream, framed by gw (``gw.upstream.wire``) whatever the client
    sent: ``path`` is origin-form (query included), ``chunked`` says how ``body`` is framed
    when ``headers`` carry no Content-Length. Deadlines are ``time.monotonic()`` seconds:
    ``deadline`` for the answer's head (retries included), ``body_deadline`` for its body.

    PERF: a named tuple, immutable as a frozen dataclass but made in a fraction of its time
    (one per proxied request)."""

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
    connect_timeout: float | None = None  # None: the upstream's
    upgrade: bool = False  # the headers ask to switch protocols: a 101 is a final answer


class UpstreamResponse:
    """An upstream answer whose body has not been read yet."""

    __slots__ = ("_conn", "_pool", "choice", "deadline", "headers", "raw", "status", "target")

    def __init__(self, raw: Response, conn: HTTPConnection, pool: ConnectionPool) -> None:
        self.raw = raw
        self.target = pool.target
        self.status = raw.status
        self.headers = raw.headers
        self._conn: HTTPConnection | None = conn
        self._pool = pool
        self.choice: Choice | None = None  # told how the exchange ended (health)
        self.deadline: float | None = None  # time.monotonic() by which the body must be in

    @property
    def content_length(self) -> int | None:
        """The answer's declared Content-Length, or None (chunked, or until close)."""
        return self.raw.content_length

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
        self._read_to_the_end()

    def body_in_hand(self) -> list[bytes] | None:
        """The whole body when it came with the head (a small answer), the connection then
        released; None when there is more to read (``body()`` streams it).

        PERF: read without ``body()``'s two generators and their socket timeout checks: there
        is nothing left to wait for.
        """
        if not self.raw.complete:
            return None
        chunks = self.raw.in_hand()
        self._read_to_the_end()
        return chunks

    def _read_to_the_end(self) -> None:
        """The whole answer is read: tell the health state, and give the connection back to
        the pool if it may carry another request."""
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

    def switched(self) -> tuple[socket.socket, bytes]:
        """The socket of an answer that switched protocols (101), and the bytes the upstream
        sent after its head. The connection is the caller's until ``abandon`` closes it: it
        never goes back to the pool."""
        assert self.status == 101 and self._conn is not None and self._conn.sock is not None
        if self.choice is not None:
            self.choice.answered(self.status)
            self.choice = None
        return self._conn.sock, self.raw.early


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
            timeout = policy.per_try_timeout or request.read_timeout or self.spec.read_timeout
            if deadline is not None:
                # PERF: comparisons, not max(min()): builtins that parse keyword arguments
                left = deadline - time.monotonic()
                timeout = left if left < timeout else timeout
                timeout = timeout if timeout > 0.001 else 0.001
            # PERF: this process's pools without a call, once they are made
            pools = self._pools if self._pid == process.pid() else self._local()
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
        connect_timeout = request.connect_timeout or self.spec.connect_timeout
        if read_timeout < connect_timeout:  # PERF: a comparison, not min()
            connect_timeout = read_timeout
        try:
            conn, idle = pool.get(connect_timeout)
        except PoolBusy:
            raise Attempt(_busy(pool.target), BUSY) from None
        except _TRANSPORT_ERRORS as ex:
            raise Attempt(translate(ex, pool.target, reading_body=False), _kind(ex)) from None
        try:
            head = request_head(
                request.method,
                request.path,
                request.headers,
                pool.target.netloc,
                request.chunked,
                request.body is None,
            )
            sock = conn.sock
            assert sock is not None  # connected by the pool
            if sock.timeout != read_timeout:  # PERF: gevent's settimeout is Python code
                sock.settimeout(read_timeout)
            send_request(sock, head, request.body, request.chunked)
            raw = Response(sock, request.method == "HEAD", request.upgrade)
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
        return UpstreamResponse(raw, conn, pool)

    def _local(self) -> tuple[ConnectionPool, ...]:
        """This process's pools, made after the fork."""
        if self._pid != process.pid():
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
            self._pid = process.pid()
        return self._pools


def _ignore(outcome: str) -> None:
    pass


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    """The first value of ``name`` (lower case, as the answer's names are)."""
    return next((v for n, v in headers if n == name), None)


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
