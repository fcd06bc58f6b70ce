"""gw.host.process: the cached pid follows a fork; send_all sends every byte, in order."""

from __future__ import annotations

import os
import socket
import threading

from gw.host.process import pid, send_all


def test_the_pid_is_this_process_and_a_forked_child_gets_its_own() -> None:
    assert pid() == os.getpid()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child)
        os.write(write, f"{pid()} {os.getpid()}".encode())
        os._exit(0)
    os.close(write)
    reported, actual = os.read(read, 100).decode().split()
    os.close(read)
    os.waitpid(child, 0)
    assert reported == actual == str(child)
    assert pid() == os.getpid()


def test_send_all_sends_more_than_one_send_takes() -> None:
    """A message larger than the socket buffers: the first send takes part, the rest follows."""
    left, right = socket.socketpair()
    left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    left.settimeout(10)
    data = bytes(range(256)) * 8192  # 2 MiB
    received = bytearray()

    def read() -> None:
        while len(received) < len(data):
            received.extend(right.recv(65536))

    reader = threading.Thread(target=read)
    reader.start()
    send_all(left, data)
    reader.join(timeout=10)
    left.close()
    right.close()
    assert bytes(received) == data


def test_send_all_sends_nothing_for_nothing() -> None:
    left, right = socket.socketpair()
    send_all(left, b"")
    send_all(left, b"ab")
    right.settimeout(1)
    assert right.recv(10) == b"ab"
    left.close()
    right.close()


def test_send_all_on_a_gevent_socket_waits_out_a_full_buffer() -> None:
    """gevent's socket: a buffer full before the first byte, then more than it holds."""
    import gevent
    import gevent.socket

    left, right = gevent.socket.socketpair()
    left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    left.settimeout(10)
    filled = 0
    while True:  # fill the buffers: the next send cannot take a byte
        try:
            filled += left._sock.send(b"f" * 1024)  # type: ignore[attr-defined]
        except BlockingIOError:
            break
    data = bytes(range(256)) * 4096  # 1 MiB

    def read() -> bytes:
        received = bytearray()
        gevent.sleep(0.05)  # the sender finds the buffer full
        while len(received) < filled + len(data):
            received.extend(right.recv(65536))
        return bytes(received)

    reader = gevent.spawn(read)
    send_all(left, data)
    received = reader.get(timeout=10)
    left.close()
    right.close()
    assert received == b"f" * filled + data
