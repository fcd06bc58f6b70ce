"""gw.host.process.receive behaves as gevent's own ``recv`` does, on a gevent socket.

Each case runs twice, reading with gevent's ``socket.recv`` and with ``receive``: the two must
give the same bytes, the same waits and the same errors. The gevent sockets run on this
thread's gevent hub; nothing is monkey-patched.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import gevent
import gevent.socket
import pytest
from gevent.exceptions import ConcurrentObjectUseError

from gw.host.process import receive

Read = Callable[[socket.socket, int], bytes]
Pair = tuple[socket.socket, socket.socket]


def _gevent_recv(sock: socket.socket, size: int) -> bytes:
    return sock.recv(size)


def _at_most(seconds: float) -> gevent.Timeout:
    """Fail a read that waits past ``seconds`` (its own timeout never came)."""
    return gevent.Timeout(seconds, AssertionError(f"still waiting after {seconds} s"))


READS = pytest.mark.parametrize("read", [_gevent_recv, receive], ids=["gevent", "receive"])


@pytest.fixture
def pair() -> Iterator[Pair]:
    left, right = gevent.socket.socketpair()
    yield left, right
    left.close()
    right.close()


@READS
def test_bytes_already_there_come_at_once(read: Read, pair: Pair) -> None:
    left, right = pair
    left.settimeout(5)
    right.sendall(b"hello")
    gevent.sleep(0.01)
    assert read(left, 3) == b"hel"
    assert read(left, 10) == b"lo"


@READS
def test_a_read_waits_for_bytes_that_come_later(read: Read, pair: Pair) -> None:
    left, right = pair
    left.settimeout(5)
    gevent.spawn_later(0.05, right.sendall, b"late")
    started = time.monotonic()
    assert read(left, 10) == b"late"
    assert 0.04 <= time.monotonic() - started < 2


@READS
def test_the_peers_close_reads_as_end_of_file(read: Read, pair: Pair) -> None:
    left, right = pair
    left.settimeout(5)
    gevent.spawn_later(0.02, right.close)
    assert read(left, 10) == b""


@READS
def test_silence_times_out_after_the_sockets_timeout(read: Read, pair: Pair) -> None:
    left, _ = pair
    left.settimeout(0.2)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="timed out"), _at_most(3):
        read(left, 10)
    assert 0.19 <= time.monotonic() - started < 2


@READS
def test_a_read_waits_the_timeout_set_last(read: Read, pair: Pair) -> None:
    left, _ = pair
    left.settimeout(5)
    left.settimeout(0.05)
    started = time.monotonic()
    with pytest.raises(TimeoutError), _at_most(3):
        read(left, 10)
    assert time.monotonic() - started < 2


@READS
def test_a_read_that_got_its_bytes_leaves_no_timeout_behind(read: Read, pair: Pair) -> None:
    """The wait's timer ends with the wait: it never fires into the greenlet afterwards."""
    left, right = pair
    left.settimeout(0.1)
    gevent.spawn_later(0.02, right.sendall, b"x")
    assert read(left, 10) == b"x"
    gevent.sleep(0.3)  # past the timeout of the finished wait: nothing may interrupt this


@READS
def test_a_close_by_another_greenlet_wakes_the_reader_with_an_error(read: Read, pair: Pair) -> None:
    left, _ = pair
    left.settimeout(5)
    gevent.spawn_later(0.05, left.close)
    started = time.monotonic()
    with pytest.raises(OSError) as raised:
        read(left, 10)
    assert not isinstance(raised.value, TimeoutError)
    assert time.monotonic() - started < 2


@READS
def test_two_greenlets_may_not_wait_on_one_socket(read: Read, pair: Pair) -> None:
    left, right = pair
    left.settimeout(5)
    first = gevent.spawn(read, left, 10)
    gevent.sleep(0.01)  # the first one waits now
    with pytest.raises(ConcurrentObjectUseError):
        read(left, 10)
    right.sendall(b"one")
    assert first.get(timeout=2) == b"one"


def test_a_blocking_socket_is_read_by_its_own_recv() -> None:
    """A sync or gthread worker's socket: ``receive`` is its ``recv``, timeout included."""
    left, right = socket.socketpair()
    try:
        left.settimeout(0.05)
        with pytest.raises(TimeoutError):
            receive(left, 10)
        right.sendall(b"ok")
        assert receive(left, 10) == b"ok"
    finally:
        left.close()
        right.close()


def _receive_within_a_tenth(sock: socket.socket, size: int) -> bytes:
    return receive(sock, size, 0.1)


@pytest.mark.parametrize("sock_kind", ["gevent", "blocking"])
def test_a_reads_own_timeout_ends_its_wait_and_leaves_the_sockets_as_it_was(
    sock_kind: str,
) -> None:
    """The edge's wait for a head: its own timeout, without a settimeout before and after."""
    make = gevent.socket.socketpair if sock_kind == "gevent" else socket.socketpair
    left, right = make()
    try:
        left.settimeout(30)
        started = time.monotonic()
        with pytest.raises(TimeoutError), _at_most(3):
            _receive_within_a_tenth(left, 10)
        assert 0.09 <= time.monotonic() - started < 2
        assert left.gettimeout() == 30
        right.sendall(b"ok")
        assert _receive_within_a_tenth(left, 10) == b"ok"
        assert left.gettimeout() == 30
    finally:
        left.close()
        right.close()
