"""The compiled reads and writes that do not wait (gw/host/_io.c) do what their Python forms
(``socket.recv`` and ``socket.send`` on a non-blocking socket, None for "would wait") do, on
real sockets: the same bytes, the same count, the same None, the same error with the same
errno. ``receive`` and ``send_all`` then behave the same with either form.

CI builds it and sets ``GW_REQUIRE_COMPILED=1`` (see tests/unit/test_accesslog_compiled.py).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import gevent.socket
import pytest

from gw.host import process

try:
    from gw.host import _io
except ImportError:  # built without a C compiler
    _io = None  # type: ignore[assignment]

compiled = pytest.mark.skipif(_io is None, reason="gw.host._io is not built here")
Pair = tuple[socket.socket, socket.socket]


def test_ci_has_the_compiled_form() -> None:
    if os.environ.get("GW_REQUIRE_COMPILED") != "1":
        pytest.skip("only where the build is required (CI)")
    assert _io is not None
    assert process._recv_now is _io.recv_now
    assert process._send_now is _io.send_now
    from gw.upstream import pool

    assert pool._quiet is _io.quiet


def outcome(call: Callable[[], Any]) -> tuple[Any, ...]:
    """What a call gave: its value, or its error's type and errno."""
    try:
        return ("value", call())
    except OSError as ex:
        return ("error", type(ex), ex.errno)
    except (TypeError, ValueError) as ex:
        return ("error", type(ex), None)


def non_blocking(pair: Pair) -> Pair:
    for sock in pair:
        sock.setblocking(False)
    return pair


@pytest.fixture
def unix_pair() -> Iterator[Pair]:
    pair = non_blocking(socket.socketpair())
    yield pair
    for sock in pair:
        sock.close()


@pytest.fixture
def tcp_pair() -> Iterator[Pair]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
    pair = non_blocking((client, accepted))
    yield pair
    for sock in pair:
        sock.close()


def both(python_form: Any, compiled_form: Any, *args: Any) -> tuple[tuple[Any, ...], ...]:
    """The Python form's outcome, then the compiled form's, one after the other."""
    return outcome(lambda: python_form(*args)), outcome(lambda: compiled_form(*args))


def both_reads(sock: socket.socket, size: int) -> tuple[tuple[Any, ...], ...]:
    assert _io is not None
    return both(process._recv_now_here, _io.recv_now, sock, size)


def both_sends(sock: socket.socket, data: bytes) -> tuple[tuple[Any, ...], ...]:
    assert _io is not None
    return both(process._send_now_here, _io.send_now, sock, data)


@compiled
@pytest.mark.parametrize("size", [0, 1, 3, 7, 65536])
def test_bytes_there_are_read_alike(size: int) -> None:
    assert _io is not None
    got = []
    for read in (process._recv_now_here, _io.recv_now):
        left, right = non_blocking(socket.socketpair())
        with left, right:
            right.sendall(b"0123456789abcdef")
            got.append(outcome(lambda: read(left, size)))  # noqa: B023 - called at once
    assert got == [("value", b"0123456789abcdef"[:size])] * 2


@compiled
def test_nothing_to_read_is_none(unix_pair: Pair) -> None:
    assert both_reads(unix_pair[0], 10) == (("value", None), ("value", None))


@compiled
def test_the_end_is_empty_bytes(unix_pair: Pair) -> None:
    left, right = unix_pair
    right.close()
    assert both_reads(left, 10) == (("value", b""), ("value", b""))


@compiled
def test_a_closed_socket_is_ebadf(unix_pair: Pair) -> None:
    left, _ = unix_pair
    left.close()
    python_form, compiled_form = both_reads(left, 10)
    assert python_form == compiled_form == ("error", OSError, errno.EBADF)


@compiled
def test_a_negative_size_is_refused(unix_pair: Pair) -> None:
    python_form, compiled_form = both_reads(unix_pair[0], -1)
    assert python_form == compiled_form == ("error", ValueError, None)


@compiled
def test_a_reset_is_connection_reset(tcp_pair: Pair) -> None:
    client, accepted = tcp_pair
    # SO_LINGER 0: the close sends a reset, not a FIN
    accepted.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    accepted.close()
    gevent.sleep(0.05)
    assert outcome(lambda: _io.recv_now(client, 10)) == (
        "error",
        ConnectionResetError,
        errno.ECONNRESET,
    )
    # the reset is reported once; the Python form then reads the end, as the compiled one does
    assert both_reads(client, 10) == (("value", b""), ("value", b""))


@compiled
def test_any_object_with_a_descriptor_is_read_through_it(unix_pair: Pair) -> None:
    left, right = unix_pair

    class Wrapped:  # not a socket: its own fileno is asked
        def fileno(self) -> int:
            return left.fileno()

    right.sendall(b"hello")
    assert _io.recv_now(Wrapped(), 10) == b"hello"
    assert _io.send_now(Wrapped(), b"back") == 4
    assert right.recv(10) == b"back"


@compiled
def test_sends_are_counted_alike(unix_pair: Pair) -> None:
    left, right = unix_pair
    assert both_sends(left, b"hello") == (("value", 5), ("value", 5))
    assert right.recv(100) == b"hellohello"
    assert both_sends(left, b"") == (("value", 0), ("value", 0))


@compiled
def test_a_full_buffer_takes_part_then_none() -> None:
    assert _io is not None
    big = b"x" * (1 << 22)
    for send in (process._send_now_here, _io.send_now):
        left, right = non_blocking(socket.socketpair())
        with left, right:
            sent = send(left, big)
            assert sent is not None and 0 < sent < len(big)  # what fitted
            assert send(left, big) is None  # nothing more fits now


@compiled
def test_a_peer_that_left_is_a_broken_pipe(unix_pair: Pair) -> None:
    left, right = unix_pair
    right.close()
    python_form, compiled_form = both_sends(left, b"hello")
    assert python_form == compiled_form == ("error", BrokenPipeError, errno.EPIPE)


@compiled
def test_only_bytes_are_sent_here(unix_pair: Pair) -> None:
    assert outcome(lambda: _io.send_now(unix_pair[0], memoryview(b"x"))) == (
        "error",
        TypeError,
        None,
    )


@pytest.fixture(params=["compiled", "python"])
def form(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """``receive`` and ``send_all`` with the compiled form (where built) or the Python form."""
    if request.param == "python":
        monkeypatch.setattr(process, "_recv_now", process._recv_now_here)
        monkeypatch.setattr(process, "_send_now", process._send_now_here)
    elif _io is None:
        pytest.skip("gw.host._io is not built here")
    return str(request.param)


def test_receive_and_send_all_carry_a_message_both_ways(form: str) -> None:
    left, right = gevent.socket.socketpair()
    try:
        left.settimeout(5)
        right.settimeout(5)
        big = os.urandom(1 << 21)  # more than one send takes: sendall sends the rest
        sender = gevent.spawn(process.send_all, left, big)
        got = bytearray()
        while len(got) < len(big):
            got += process.receive(right, 65536)
        sender.get(timeout=5)
        assert bytes(got) == big
        process.send_all(right, b"answer")
        assert process.receive(left, 100) == b"answer"
        right.close()
        assert process.receive(left, 100) == b""
    finally:
        left.close()
        right.close()


def test_receive_times_out_with_either_form(form: str) -> None:
    left, right = gevent.socket.socketpair()
    try:
        left.settimeout(0.05)
        with pytest.raises(TimeoutError):
            process.receive(left, 10)
    finally:
        left.close()
        right.close()
