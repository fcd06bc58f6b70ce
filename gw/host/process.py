"""This process's identity and its sockets, as the request path needs them cheaply.

- ``pid()``: this process's id, kept in memory and renewed in a forked child. Since glibc
  2.25 ``os.getpid()`` is a system call each time; the request path asks for it several times
  a request (the access line, per-process pools and tables made after the fork).
- ``send_all(sock, data)``: ``sock.sendall(data)`` in one ``send`` when it fits, as a small
  HTTP message does.
- ``receive(sock, size, timeout)``: ``sock.recv(size)`` within the socket's timeout (or
  ``timeout``), whose wait on a gevent socket costs no ``gevent.Timeout``.
- ``every(seconds, work, name)``: ``work`` repeated by one background thread of this process.
- ``native_lock()``: a lock of the OS threads, for critical sections that never wait.
- ``freeze_loaded_heap()``: in a worker whose app is loaded, keep the garbage collector off
  what loading made.
"""

from __future__ import annotations

import gc
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from gevent import getcurrent, monkey
from gevent.socket import socket as GeventSocket
from gevent.socket import wait as wait_on_watcher

_pid = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _pid.__setitem__(0, os.getpid()))


def pid() -> int:
    """Return this process's id (renewed in a child after ``fork``)."""
    return _pid[0]


_allocate_lock = monkey.get_original("_thread", "allocate_lock")


def native_lock() -> Any:
    """Return a new lock of the OS threads, never gevent's, even in a gevent worker.

    Only for a critical section that never waits (no I/O, no sleep, no other lock): a
    greenlet cannot be switched out while it holds the lock, so no other greenlet of its
    thread can find it taken; other OS threads (a gthread worker's, gevent's thread pool)
    wait for it as for any lock. A section that may wait must have its lock polled, never
    waited for by blocking (``gw.host.locks``): a blocked thread would never run the
    greenlet that holds it.

    PERF: in a gevent worker ``threading.Lock`` is gevent's, whose ``acquire`` is Python
    code: about 1.5 µs a request in a loaded worker for one uncontended lock.
    """
    return _allocate_lock()


# Allocations (net of frees) of tracked objects between two young collections; CPython's
# default is 700. See freeze_loaded_heap.
YOUNG_COLLECTION_EVERY = 10_000


def freeze_loaded_heap() -> None:
    """Keep the garbage collector off the objects that loading the app made (about 65,000:
    the config, its compiled routes, pydantic, cryptography, prometheus_client), and collect
    the young generation every ``YOUNG_COLLECTION_EVERY`` allocations instead of every 700.

    PERF: a loaded worker allocates objects that live a little (the access log's and the
    metrics' batches hold every request's for up to 0.1 s), so at CPython's default it ran a
    young collection every 22 requests and a full one every few seconds, each walking all
    65,000 startup objects: one worker at 64 connections spent 525 ms of 8 s collecting
    (about 12 µs a request, none of it garbage: requests make no reference cycles, see
    ``gw.upstream.wire.Response.close``), and each full collection stopped every connection
    for up to 28 ms, the p99 latency. Frozen objects are never walked again (``gc.freeze``,
    the tool CPython's documentation gives pre-forking servers); a cycle that does become
    garbage is still collected, after at most ``YOUNG_COLLECTION_EVERY`` allocations.
    """
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, middle, old)


_looping: dict[str, int] = {}  # name -> the pid of the process whose thread runs it


def every(seconds: float, work: Callable[[], None], name: str) -> None:
    """Run ``work`` every ``seconds`` in a daemon thread named ``name``, started by the first
    call in each process (a thread started before a fork does not exist in the child); later
    calls cost a dict lookup."""
    if _looping.get(name) == _pid[0]:
        return
    _looping[name] = _pid[0]

    def loop() -> None:
        while True:
            time.sleep(seconds)
            work()

    threading.Thread(target=loop, name=name, daemon=True).start()


def send_all(sock: socket.socket, data: bytes) -> None:
    """Send every byte of ``data`` on ``sock`` (within its timeout), as ``sendall`` does.

    PERF: gevent's ``sendall`` asks the kernel for the socket's send buffer size
    (``getsockopt``) on every call, to size its chunks; one ``send`` takes a small message
    whole, and only what it leaves goes through ``sendall``. On gevent's plain socket that
    ``send`` is ``_send_now`` on the OS socket under it (compiled: ``gw/host/_io.c``).
    """
    if not data:
        return
    if sock.__class__ is GeventSocket and data.__class__ is bytes:
        sent = _send_now(cast(Any, sock)._sock, data) or 0  # the OS socket under gevent's
    else:
        sent = sock.send(data)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:])


def receive(sock: socket.socket, size: int, timeout: float | None = None) -> bytes:
    """Return ``sock.recv(size)``: at most ``size`` bytes, b"" at EOF, waiting for them at
    most the socket's timeout (then TimeoutError), as ``recv`` does. ``timeout``: wait at most
    that many seconds instead; the socket's own timeout stays as it was.

    PERF: gevent's socket makes a ``gevent.Timeout`` for every wait of a socket with a timeout:
    a Python object, its loop timer, and Python calls to start, cancel and close them, 24.7k
    instructions a wait (``bench/wait_cost.py``; ``bench/README.md``, the tenth run); a proxied
    request waits twice, for the client's next request and for the upstream's answer. Here a
    wait has only the loop timer (2.0k), started as gevent starts its own. Every other socket
    (a blocking one in a sync or gthread worker, gevent's TLS socket, a socket with no
    timeout) goes through its own ``recv``. A wait with its own ``timeout`` (the edge's wait
    for a client's next head) needs no ``settimeout`` before and after it: on gevent's socket
    those are Python code, 0.85 µs the pair.
    """
    if sock.__class__ is not GeventSocket:
        return sock.recv(size) if timeout is None else _receive_within(sock, size, timeout)
    wait = sock.timeout if timeout is None else timeout
    if not wait:
        return sock.recv(size)
    raw: socket.socket = cast(Any, sock)._sock  # the non-blocking OS socket under gevent's
    while True:
        data = _recv_now(raw, size)
        if data is not None:
            return data
        _wait_readable(sock, wait)


def _recv_now_here(sock: socket.socket, size: int) -> bytes | None:
    """``sock.recv(size)`` on a non-blocking socket, None where it would wait (the Python form
    of ``gw.host._io.recv_now``)."""
    try:
        return sock.recv(size)
    except BlockingIOError:
        return None


def _send_now_here(sock: socket.socket, data: bytes) -> int | None:
    """``sock.send(data)`` on a non-blocking socket, None where it would wait (the Python form
    of ``gw.host._io.send_now``)."""
    try:
        return sock.send(data)
    except BlockingIOError:
        return None


_recv_now: Callable[[socket.socket, int], bytes | None]
_send_now: Callable[[socket.socket, bytes], int | None]
try:  # PERF: the compiled form (gw/host/_io.c: why it is cheaper, and what it keeps)
    from gw.host._io import recv_now as _recv_now
    from gw.host._io import send_now as _send_now
except ImportError:  # built without a C compiler: the Python forms
    _recv_now, _send_now = _recv_now_here, _send_now_here


def _receive_within(sock: socket.socket, size: int, timeout: float) -> bytes:
    """``receive`` on a socket that is not gevent's plain one, within ``timeout``: its own
    ``recv``, with ``timeout`` set for this call only."""
    kept = sock.gettimeout()
    if timeout == kept:
        return sock.recv(size)
    sock.settimeout(timeout)
    try:
        return sock.recv(size)
    finally:
        sock.settimeout(kept)


def _wait_readable(sock: Any, timeout: float) -> None:
    """Park this greenlet until ``sock`` is readable, or raise TimeoutError after ``timeout``
    seconds; what gevent's ``wait_on_socket`` does, less its ``Timeout`` object.

    gevent's own ``wait`` parks it (no timeout of its own): it refuses a socket another
    greenlet already waits on, and a close by another greenlet wakes it with an error.
    """
    hub = sock.hub
    timer = hub.loop.timer(timeout)
    timer.start(_time_out, getcurrent(), update=True)
    try:
        wait_on_watcher(sock._read_event, hub=hub)
    finally:
        timer.close()  # before this greenlet can wait again: a timer left would fire into it


def _time_out(waiting: Any) -> None:
    waiting.throw(TimeoutError("timed out"))
