"""The urllib3 adapter: connection pools per upstream target, and the one place where
urllib3's exceptions become gateway errors.

Pools are made lazily in the process that uses them, so a gunicorn worker never shares a
socket with its master or a sibling (the app is loaded after the fork, and a preloaded app
still gets fresh pools in each worker).
"""

from __future__ import annotations

import http.client
import itertools
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import IO

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.util import SKIP_HEADER

from gw.config import Target, UpstreamSpec
from gw.errors import (
    UpstreamBadResponse,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

CHUNK = 64 * 1024
Body = IO[bytes] | Iterable[bytes] | None


class UpstreamResponse:
    """An upstream answer whose body has not been read yet."""

    def __init__(self, raw: urllib3.BaseHTTPResponse, target: Target) -> None:
        self.raw = raw
        self.target = target
        self.status = raw.status
        self.headers: list[tuple[str, str]] = list(raw.headers.items())

    def body(self, read_to_end_below: int = CHUNK) -> Iterator[bytes]:
        """Yield the body as it arrives, undecoded; raise UpstreamError if it breaks off."""
        raw = self.raw
        length = raw.length_remaining
        try:
            if length is not None and length <= read_to_end_below:
                # PERF: one read() for small bodies skips stream()'s generator machinery.
                data = raw.read(decode_content=False)
                if data:
                    yield data
            else:
                yield from raw.stream(CHUNK, decode_content=False)
        except (HTTPError, OSError, http.client.HTTPException) as ex:
            self.abandon()
            raise _translate(ex, self.target, reading_body=True) from None
        raw.release_conn()

    def abandon(self) -> None:
        """Close the connection: a half-read response must never go back to the pool."""
        self.raw.close()
        self.raw.release_conn()


class UpstreamClient:
    """Send requests to one upstream's targets through per-process keep-alive pools."""

    def __init__(self, spec: UpstreamSpec) -> None:
        self.spec = spec
        self._pid = -1
        self._pools: tuple[urllib3.HTTPConnectionPool, ...] = ()
        self._turn = itertools.count()

    def send(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: Body = None,
        chunked: bool = False,
        read_timeout: float | None = None,
    ) -> UpstreamResponse:
        """Send one request (origin-form ``path``) to the next target; never retry, never redirect.

        Raises:
            UpstreamError: refused, reset, timed out or answered with something not HTTP.
        """
        index, pool = self._pick()
        target = self.spec.targets[index]
        timeout = urllib3.Timeout(
            connect=self.spec.connect_timeout, read=read_timeout or self.spec.read_timeout
        )
        try:
            raw = pool.urlopen(
                method,
                path,
                body=body,
                headers=headers,
                retries=False,
                redirect=False,
                assert_same_host=False,
                timeout=timeout,
                preload_content=False,
                decode_content=False,
                release_conn=False,
                chunked=chunked,
            )
        except (HTTPError, OSError, http.client.HTTPException) as ex:
            raise _translate(ex, target, reading_body=False) from None
        return UpstreamResponse(raw, target)

    def _pick(self) -> tuple[int, urllib3.HTTPConnectionPool]:
        if self._pid != os.getpid():
            self._pools = tuple(self._pool(t) for t in self.spec.targets)
            self._pid = os.getpid()
        index = next(self._turn) % len(self._pools)
        return index, self._pools[index]

    def _pool(self, target: Target) -> urllib3.HTTPConnectionPool:
        kind = (
            urllib3.HTTPSConnectionPool if target.scheme == "https" else urllib3.HTTPConnectionPool
        )
        # APPSEC: a pool belongs to one configured target; request paths are origin-form and
        # never joined onto a host, so no client input can change where a request goes.
        return kind(
            target.host, target.port, maxsize=self.spec.pool_size, block=False, retries=False
        )


def default_headers(headers: dict[str, str]) -> dict[str, str]:
    """Stop urllib3 from adding a User-Agent the client did not send."""
    if not any(k.lower() == "user-agent" for k in headers):
        headers["User-Agent"] = SKIP_HEADER
    return headers


def _translate(ex: Exception, target: Target, reading_body: bool) -> UpstreamError:
    """Map a urllib3/socket exception onto the gateway's error categories."""
    where = f"upstream {target}"
    if isinstance(ex, NewConnectionError):
        return UpstreamUnavailable(f"{where} refused the connection or is unreachable")
    if isinstance(ex, ConnectTimeoutError):
        return UpstreamTimeout(f"{where} did not accept the connection in time")
    if isinstance(ex, (ReadTimeoutError, TimeoutError)):
        return UpstreamTimeout(f"{where} did not answer in time")
    cause = ex.args[1] if isinstance(ex, ProtocolError) and len(ex.args) > 1 else ex
    if reading_body:
        return UpstreamBadResponse(f"{where} broke off the response body")
    if isinstance(cause, http.client.RemoteDisconnected):
        return UpstreamUnavailable(f"{where} closed the connection without answering")
    if isinstance(cause, (http.client.HTTPException, ValueError)):
        return UpstreamBadResponse(f"{where} answered with something that is not valid HTTP")
    if isinstance(ex, SSLError):
        return UpstreamUnavailable(f"{where}: TLS handshake failed")
    return UpstreamUnavailable(f"{where}: connection failed ({type(cause).__name__})")
