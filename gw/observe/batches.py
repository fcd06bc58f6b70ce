"""Finished requests, queued once and handed in batches to the access log and the metrics.

A request's end costs one clock read and one deque append (``add``: no lock, a deque's
``append`` and ``popleft`` are atomic). Everything observability makes of the request is
made from its batch: the access line (``gw.observe.accesslog``), the request's and the
upstream's histogram observations (``gw.observe.instruments``). PERF: before, a request made
three calls into observability at its end (each with calls of its own) and one more at the
upstream, each running code the rest of the request had pushed out of the CPU's caches; in a
batch the same code runs many times in a row (bench/README.md, thirteenth run).

A batch is handed on, in the order its requests finished, one batch at a time:
- when ``BATCH`` requests are waiting (by the request that made it so);
- by a background thread every ``MAX_WAIT`` seconds, so a quiet worker's lines and counts are
  out within ``MAX_WAIT``;
- before the metrics are folded into their values (a publish, a scrape: ``flush``), so a
  worker's counts are exact when it reads them;
- at exit (``atexit``: gunicorn workers leave through ``sys.exit``).
PERF: never because a request ended: a worker under load goes idle between many requests.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable

from gw.core.exchange import Exchange
from gw.host import process
from gw.observe.tally import taken

BATCH = 64
MAX_WAIT = 0.1

log = logging.getLogger("gw")

Consumer = Callable[[list[Exchange]], None]

consumers: dict[str, Consumer] = {}
"""Who gets each batch, by name (``access-log``, ``metrics``). Empty: ``add`` is not called."""

_this_process_only: set[str] = set()  # consumers a child process does not inherit
_pending: deque[Exchange] = deque()
_lock = threading.Lock()  # one batch handed on at a time, so batches stay in order
_draining = [False]  # this process's background thread has started (reset in a child)
_monotonic = time.monotonic


def consume(name: str, consumer: Consumer | None, *, this_process_only: bool = False) -> None:
    """Hand every batch to ``consumer`` under ``name`` from now on (``None``: stop).

    ``this_process_only``: a process forked from this one does not hand its batches to it
    (a worker counts its requests in the ``Metrics`` it makes itself).
    """
    _this_process_only.discard(name)
    if consumer is None:
        consumers.pop(name, None)
        return
    consumers[name] = consumer
    if this_process_only:
        _this_process_only.add(name)


def add(exchange: Exchange) -> None:
    """Queue ``exchange``, which has just ended (its ``ended`` is set here)."""
    exchange.ended = _monotonic()
    _pending.append(exchange)
    if len(_pending) >= BATCH or not _draining[0]:  # PERF: one test for the usual case
        _after_add()


def _after_add() -> None:
    """Hand on a full batch; start the background flusher if it has not started."""
    if not _draining[0]:
        _draining[0] = True
        process.every(MAX_WAIT, flush, "gw-observe")
    if len(_pending) >= BATCH:
        flush()


def flush() -> None:
    """Hand the waiting requests on now; return once every request that ended before the call
    has been handed on, by this call or by another thread's flush still under way.

    The lock is always taken: when the background thread has just taken the waiting requests
    and is still handing them on, the queue is empty but their counts are not in yet, and a
    publish that went ahead then (at exit, or before a scrape) left them out: a worker's last
    counts were lost at a graceful reload (tests/metrics/test_metrics_workers.py, once in a
    few CI runs). ``flush`` is never called per request, so the lock costs nothing there.
    """
    with _lock:
        batch = taken(_pending)
        if batch:
            _hand_on(batch)


def _hand_on(batch: list[Exchange]) -> None:
    for name, consumer in list(consumers.items()):
        try:
            consumer(batch)
        except Exception:  # one consumer's failure must not cost the others theirs
            log.exception("%s: a batch of %d finished requests was lost", name, len(batch))


def _after_fork() -> None:
    """A child hands on only its own requests, to the consumers it inherits."""
    _pending.clear()
    for name in _this_process_only:
        consumers.pop(name, None)
    _this_process_only.clear()
    _draining[0] = False


os.register_at_fork(after_in_child=_after_fork)
atexit.register(flush)
