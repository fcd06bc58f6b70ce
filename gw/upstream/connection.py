"""Upstream connections: the one way gw connects to a target, and a one-off GET on a fresh one.

The pools of ``gw.upstream.pool`` and the active health checks (the health package's
``checker``) both connect with ``connect``, so a check measures the transport the traffic
uses: the same urllib3 connection classes, TLS context, SNI and certificate name; and
``fetch_status`` speaks ``gw.upstream.wire`` as a proxied request does.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError
from urllib3.util.ssl_match_hostname import CertificateError

from gw.upstream.tls import TlsClient
from gw.upstream.wire import Response, request_head, send_request


def connect(
    scheme: str, host: str, port: int | None, tls: TlsClient | None, timeout: float
) -> HTTPConnection:
    """Open a connection to one target: plain for http, TLS with ``tls`` for https.

    ``tls`` None on an https target: urllib3's defaults (the system's CAs, the host checked).

    Raises:
        NewConnectionError, ConnectTimeoutError: the TCP connection failed or timed out.
        ssl.SSLError, CertificateError: the TLS handshake failed.
    """
    # APPSEC: a connection belongs to one configured target; request paths are origin-form
    # and never joined onto a host, so no client input changes where it goes.
    conn: HTTPConnection
    if scheme != "https":
        conn = HTTPConnection(host, port, timeout=timeout)
    elif tls is None:
        conn = HTTPSConnection(host, port, timeout=timeout)
    else:
        # APPSEC: the upstream's one context decides trust and the client certificate;
        # server_name (or the target's host when unset) is what its certificate must name.
        conn = HTTPSConnection(
            host,
            port,
            timeout=timeout,
            ssl_context=tls.context,
            server_hostname=tls.server_name,
        )
    conn.connect()
    return conn


def fetch_status(
    url: str, path: str, headers: Mapping[str, str], tls: TlsClient | None, timeout: float
) -> int:
    """GET ``path`` from the target at ``url`` on a connection of its own; return the status.

    The whole exchange (connect, TLS handshake, request, the answer's head and body, read and
    dropped) must end within ``timeout``; the connection is closed afterwards, whatever
    happened. ``Host`` is the target's host and port, as on a proxied request without
    ``preserve_host``. ``path`` goes on the request line as it is.

    Raises:
        ConnectionRefusedError: nothing listens at the target.
        TimeoutError: the connection or the whole answer took longer than ``timeout``.
        OSError: any other connection or TLS failure (name resolution, reset, bad certificate).
        MalformedResponse, BodyBrokenOff: the answer is not valid HTTP/1.x.
    """
    status, _ = fetch(url, path, headers, tls, timeout, max_bytes=None)
    return status


def fetch(
    url: str,
    path: str,
    headers: Mapping[str, str],
    tls: TlsClient | None,
    timeout: float,
    max_bytes: int | None,
    *,
    method: str = "GET",
    body: bytes | None = None,
) -> tuple[int, bytes]:
    """GET ``path`` as ``fetch_status`` does; return the status and the body, which is kept
    only when ``max_bytes`` is given (``AnswerTooLarge`` past it); never follows a redirect.

    ``method`` and ``body`` send another request (the token introspection's POST): the body
    is sent whole, framed by a ``Content-Length`` that ``headers`` must not carry."""
    deadline = time.monotonic() + timeout
    parts = urlsplit(url)
    conn = _connect(parts.scheme, parts.hostname or "", parts.port, tls, timeout)
    try:
        sock = conn.sock
        assert sock is not None  # connected above
        sock.settimeout(_time_left(deadline))
        if body is not None:
            headers = {**headers, "Content-Length": str(len(body))}
        head = request_head(method, path, headers, parts.netloc, False, body is None)
        send_request(sock, head, body, False)
        response = Response(sock, head_request=method == "HEAD")
        return response.status, _read(response, deadline, max_bytes)
    finally:
        conn.close()


class AnswerTooLarge(ValueError):
    """An answer's body is larger than the caller would read."""


def _read(response: Response, deadline: float, max_bytes: int | None) -> bytes:
    kept: list[bytes] = []
    size = 0
    for chunk in response.body(deadline):
        if max_bytes is None:
            continue
        size += len(chunk)
        if size > max_bytes:
            raise AnswerTooLarge(f"the body is larger than {max_bytes} bytes")
        kept.append(chunk)
    return b"".join(kept)


def _connect(
    scheme: str, host: str, port: int | None, tls: TlsClient | None, timeout: float
) -> HTTPConnection:
    """``connect``, with urllib3's errors translated into the built-in ones they stand for."""
    try:
        return connect(scheme, host, port, tls, timeout)
    except NewConnectionError as ex:  # before ConnectTimeoutError: it is a subclass of it
        if isinstance(ex.__cause__, ConnectionRefusedError):
            raise ConnectionRefusedError(str(ex)) from ex
        raise ConnectionError(str(ex)) from ex
    except ConnectTimeoutError as ex:
        raise TimeoutError(str(ex)) from ex
    except CertificateError as ex:
        raise ssl.SSLCertVerificationError(str(ex)) from ex
    except HTTPError as ex:
        raise ConnectionError(str(ex)) from ex


def _time_left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the connection took the whole timeout")
    return left
