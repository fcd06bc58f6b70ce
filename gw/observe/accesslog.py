"""One JSON line per request, written when the response body is finished, in batches.

Lines go to stdout (journald under systemd) in the order their requests finished in this
worker. A finished request is queued with its end time and duration, and its line is made
when its batch is written, with one ``write`` per batch:
- when ``BATCH_LINES`` lines are waiting;
- by a background flusher every ``MAX_WAIT`` seconds, so a quiet gateway's lines are out
  within ``MAX_WAIT``;
- at exit (``atexit``: gunicorn workers leave through ``sys.exit``).
PERF: never because a request ended: a worker under load goes idle between many requests, and
a ``write`` there costs a system call per one or two requests. The request path only appends
to a deque (no lock: a deque's ``append`` and ``popleft`` are atomic); the lines of a batch
are made together, which in a loaded worker cost about half of making each one as its request
ends, scattered between other work (bench/README.md, fifth run).
A batch that cannot be written (stdout closed, a full disk) is not lost silently: the count of
lines dropped is reported on stderr, once per incident.
"""

from __future__ import annotations

import atexit
import errno
import functools
import json
import logging
import os
import sys
import threading
import time
from collections import deque
from typing import Any

from gw.core.exchange import Exchange
from gw.host import process
from gw.observe.incident import IncidentLog
from gw.observe.tally import taken

BATCH_LINES = 64
MAX_WAIT = 0.1

log = logging.getLogger("gw")

Ended = tuple[Exchange, int, float]
"""A finished request waiting for its line: the exchange, the second it ended (Unix time) and
its duration in milliseconds."""


class _Writer:
    """The batching writer of one process (see the module docstring)."""

    def __init__(self) -> None:
        self.enabled = False
        self.fd = 1
        self.pending: deque[Ended] = deque()
        self.lock = threading.Lock()  # one batch written at a time, so batches stay in order
        self.failures = IncidentLog(log, "access log")

    def add(self, ended: Ended) -> None:
        pending = self.pending
        pending.append(ended)
        if len(pending) >= BATCH_LINES:
            self.flush()
        else:
            process.every(MAX_WAIT, self.flush, "gw-access-log")

    def flush(self) -> None:
        if self.pending:
            with self.lock:
                self._write_pending()

    def _write_pending(self) -> None:
        """Write the lines of every queued request (the caller holds the lock)."""
        batch = taken(self.pending)
        data = "".join(_lines(batch)).encode()
        try:
            _write_all(self.fd, data)
        except OSError as ex:
            self.failures.failed(ex, f"{len(batch)} access line(s) dropped")
            return
        self.failures.succeeded()


def _lines(batch: list[Ended]) -> list[str]:
    lines, worker = [], process.pid()
    for exchange, second, duration_ms in batch:
        try:
            lines.append(_line(exchange, _formatted(second), duration_ms, worker))
        except Exception:  # a stage's field that is not JSON: reported, the batch goes on
            log.exception("access line of request %s dropped", exchange.request_id)
    return lines


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except InterruptedError:
            continue
        except BlockingIOError:
            time.sleep(0.001)  # a non-blocking stdout that is full: wait for the reader
            continue
        if written <= 0:
            raise OSError(errno.EIO, "stdout accepted no bytes")
        view = view[written:]


_writer = _Writer()
atexit.register(_writer.flush)


def configure(enabled: bool) -> None:
    """Write access lines to stdout, one JSON object each, unless disabled."""
    _writer.enabled = enabled
    _writer.fd = sys.stdout.fileno() if enabled else 1


_LEVELS = frozenset({"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"})


def configure_diagnostics() -> None:
    """Send gw's own warnings and errors (gw, gw.audit, gw.ratelimit, ...) to stderr."""
    logger = logging.getLogger("gw")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")
        )
        logger.addHandler(handler)
        # GW_LOG_LEVEL (gunicorn.conf.py's loglevel too); debug adds e.g. the nearest routes
        # of a 404. gunicorn itself refuses a level it does not know.
        level = os.environ.get("GW_LOG_LEVEL", "info").upper()
        logger.setLevel(level if level in _LEVELS else logging.INFO)
        logger.propagate = False


def write(exchange: Exchange) -> None:
    """Queue ``exchange``'s access line (made and written with its batch; see the module
    docstring)."""
    if _writer.enabled:
        _writer.add((exchange, int(time.time()), exchange.elapsed_ms()))


def line_of(exchange: Exchange) -> str:
    """The access line of ``exchange`` if it ended now: one JSON object and its newline."""
    return _line(exchange, _now(), exchange.elapsed_ms(), process.pid())


def _line(exchange: Exchange, when: str, duration_ms: float, worker: int) -> str:
    """The access line of ``exchange``, which ended at ``when`` after ``duration_ms``.

    PERF: written field by field with the json module's own C string encoder, not built as a
    dict and passed to ``json.dumps``, and with no Python call per field; the text is the
    same (``tests/unit/test_accesslog.py`` compares the two) but for the duration, whose
    three decimals are always written (``3.490`` where ``json.dumps`` writes ``3.49``: ``.3f``
    costs a third of the shortest float ``repr``). ``when`` is gw's own ASCII timestamp: it
    needs no escaping.
    """
    extra = exchange.extra
    if not _BASE_FIELDS.isdisjoint(extra):
        return _ENCODE(_fields(exchange, when, duration_ms, worker)) + "\n"  # a stage's wins
    client, route = exchange.client, exchange.route
    upstream, target = exchange.upstream, exchange.upstream_target
    text = (
        f'{{"time":"{when}","request_id":{_str(exchange.request_id)},'
        f'"client":{"null" if client is None else _str(client.ip)},'
        f'"method":{_str(exchange.method)},'
        f'"path":{_str(exchange.path or exchange.raw_target[:512])},'
        f'"route":{"null" if route is None else _str(route)},'
        f'"upstream":{"null" if upstream is None else _str(upstream)},'
        f'"target":{"null" if target is None else _str(target)},'
        f'"status":{int(exchange.status)},"bytes":{int(exchange.bytes_sent)},'
        f'"duration_ms":{duration_ms:.3f},"worker":{worker}'
    )
    if exchange.error:
        text += f',"error":{_str(exchange.error)}'
    for name, value in extra.items():
        text += f",{_str(name)}:{_str(value) if value.__class__ is str else _ENCODE(value)}"
    return text + "}\n"


def _fields(exchange: Exchange, when: str, duration_ms: float, worker: int) -> dict[str, Any]:
    """The access line as a dict (what ``_line`` writes)."""
    client = exchange.client
    line: dict[str, Any] = {
        "time": when,
        "request_id": exchange.request_id,
        "client": client.ip if client else None,
        "method": exchange.method,
        "path": exchange.path or exchange.raw_target[:512],
        "route": exchange.route,
        "upstream": exchange.upstream,
        "target": exchange.upstream_target,
        "status": exchange.status,
        "bytes": exchange.bytes_sent,
        "duration_ms": round(duration_ms, 3),
        "worker": worker,
    }
    if exchange.error:
        line["error"] = exchange.error
    line.update(exchange.extra)
    return line


_BASE_FIELDS = frozenset(
    [
        "time",
        "request_id",
        "client",
        "method",
        "path",
        "route",
        "upstream",
        "target",
        "status",
        "bytes",
        "duration_ms",
        "worker",
        "error",
    ]
)
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode
_str = json.encoder.encode_basestring_ascii


def flush() -> None:
    """Write the waiting lines now."""
    _writer.flush()


def _now() -> str:
    """The local time as ISO 8601 with its offset.

    PERF: ``strftime`` per line is most of a microsecond; the text changes once a second.
    """
    return _formatted(int(time.time()))


@functools.lru_cache(maxsize=1)
def _formatted(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(second))
