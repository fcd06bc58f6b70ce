"""gw.upstream.pool: an idle connection is reused only if nothing is readable on it.

Real sockets on 127.0.0.1, plain and TLS, as the stdlib makes them (gthread and sync workers)
and as gevent does (the default worker), without monkey-patching this process.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import gevent.socket
import gevent.ssl
import pytest

from gw.upstream import pool as pool_module
from gw.upstream.pool import ConnectionPool
from gw.upstream.spec import Target
from tests.support.tls import make_certificate, server_context

GENEROUS = 2.0  # seconds; the sockets' read timeout is 5, so a blocking check would show


@dataclass
class Link:
    ours: socket.socket  # the gateway's side, as the pool holds it
    theirs: socket.socket  # the upstream's side


@pytest.fixture(scope="module")
def server_tls(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    return server_context(*make_certificate(tmp_path_factory.mktemp("tls")))


def _connect(kind: str, server_tls: ssl.SSLContext) -> Link:
    """Connect, then play one exchange, as the pool's connections have before they idle."""
    tls = kind.endswith("tls")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)
    accepted: list[socket.socket] = []

    def accept() -> None:
        conn, _ = listener.accept()
        accepted.append(server_tls.wrap_socket(conn, server_side=True) if tls else conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    ours = _client_socket(kind, listener.getsockname())
    thread.join(5)
    listener.close()
    theirs = accepted[0]
    theirs.sendall(b"answer")
    assert ours.recv(6) == b"answer"  # TLS: also reads the server's session tickets
    return Link(ours, theirs)


def _client_socket(kind: str, address: tuple[str, int]) -> socket.socket:
    gevented = kind.startswith("gevent")
    make = gevent.socket.create_connection if gevented else socket.create_connection
    ours: socket.socket = make(address, timeout=5)
    if not kind.endswith("tls"):
        return ours
    context = (gevent.ssl.SSLContext if gevented else ssl.SSLContext)(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context.wrap_socket(ours)


@pytest.fixture(autouse=True, params=["compiled", "python"])
def form(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test with the poll's compiled form (where built) and with its Python form."""
    if request.param == "python":
        monkeypatch.setattr(pool_module, "_quiet", pool_module._quiet_here)
    return str(request.param)


@pytest.fixture(params=["stdlib", "stdlib-tls", "gevent", "gevent-tls"])
def link(request: pytest.FixtureRequest, server_tls: ssl.SSLContext) -> Iterator[Link]:
    made = _connect(request.param, server_tls)
    yield made
    made.ours.close()
    made.theirs.close()


def _idle(link: Link) -> bool:
    """Park the connection as ``ConnectionPool.put`` does, then take one as a request would:
    whether the pool gives back the parked connection (clean) or makes a new one."""
    tls = isinstance(link.ours, ssl.SSLSocket | gevent.ssl.SSLSocket)
    fresh = _FakeConnection(None)
    target = Target("https" if tls else "http", "127.0.0.1", 1, "")
    pool = ConnectionPool(target, 4, connect=lambda target, timeout: fresh)  # type: ignore[arg-type,return-value]
    link.ours.settimeout(5)  # what the last exchange left
    parked = _FakeConnection(link.ours)
    pool.put(parked)  # type: ignore[arg-type]
    started = time.monotonic()
    taken, _ = pool.get(1.0)
    assert time.monotonic() - started < GENEROUS, "the check waited for the socket"
    return taken is parked


class _FakeConnection:
    """The two attributes of urllib3's HTTPConnection that the pool uses to park one."""

    def __init__(self, sock: socket.socket | None) -> None:
        self.sock = sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


def test_a_silent_connection_is_clean(link: Link) -> None:
    assert _idle(link)
    assert _idle(link)  # the check consumed nothing


def test_bytes_after_the_answer_spoil_the_connection(link: Link) -> None:
    link.theirs.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nPOISONED")
    time.sleep(0.05)
    assert not _idle(link)


def test_a_close_by_the_upstream_spoils_the_connection(link: Link) -> None:
    link.theirs.close()
    time.sleep(0.05)
    assert not _idle(link)


def test_bytes_already_decrypted_but_unread_spoil_a_tls_connection(
    server_tls: ssl.SSLContext,
) -> None:
    """One TLS record holding the answer and more: the kernel has nothing, ssl holds the rest."""
    made = _connect("stdlib-tls", server_tls)
    made.theirs.sendall(b"answer+POISON")
    time.sleep(0.05)
    assert isinstance(made.ours, ssl.SSLSocket)
    assert made.ours.recv(6) == b"answer"
    assert made.ours.pending() > 0
    assert not _idle(made)
    made.ours.close()
    made.theirs.close()
