"""One JSON line per request, written when the response body is finished, in batches.

Lines go to stdout (journald under systemd) in the order their requests finished in this
worker. The lines of a batch of finished requests (``gw.observe.batches``: within 0.1 s, or
64 requests) are made together and written with one ``write``. PERF: the lines of a batch
cost about half of making each one as its request ends, scattered between other work
(bench/README.md, fifth run), and a ``write`` per request would be a system call per one or
two requests.
A batch that cannot be written (stdout closed, a full disk) is not lost silently: the count of
lines dropped is reported on stderr, once per incident.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from gw.core.bounded import remember
from gw.core.exchange import Exchange
from gw.host import process
from gw.observe import batches
from gw.observe.incident import IncidentLog

log = logging.getLogger("gw")


class _Writer:
    """Where this process's lines go, and its failures to write them."""

    def __init__(self) -> None:
        self.fd = 1
        self.failures = IncidentLog(log, "access log")

    def write(self, batch: list[Exchange]) -> None:
        """Write the lines of ``batch`` (handed on by ``gw.observe.batches``, in order)."""
        wall = time.time() - time.monotonic()  # a monotonic time plus this is Unix time
        data = _batch_lines(batch, wall, process.pid(), _python_line)
        try:
            _write_all(self.fd, data)
        except OSError as ex:
            self.failures.failed(ex, f"{len(batch)} access line(s) dropped")
            return
        self.failures.succeeded()


def _python_lines(
    batch: list[Exchange], wall: float, worker: int, line: Callable[[Exchange, float, int], str]
) -> bytes:
    """The lines of ``batch``, in order, as the bytes to write: ``line`` makes each one (the
    compiled form's ``lines`` makes the same bytes)."""
    return "".join([line(exchange, wall, worker) for exchange in batch]).encode()


def _python_line(exchange: Exchange, wall: float, worker: int) -> str:
    """The line of one finished ``exchange`` (``""`` if a stage's field cannot be written)."""
    ended = exchange.ended
    when, duration_ms = _formatted(int(ended + wall)), (ended - exchange.started) * 1000.0
    try:
        return _line(exchange, when, duration_ms, worker)
    except Exception:  # a stage's field that is not JSON: reported, the batch goes on
        log.exception("access line of request %s dropped", exchange.request_id)
        return ""


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


def configure(enabled: bool) -> None:
    """Write access lines to stdout, one JSON object each, unless disabled."""
    _writer.fd = sys.stdout.fileno() if enabled else 1
    batches.consume("access-log", _writer.write if enabled else None)


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


def line_of(exchange: Exchange) -> str:
    """The access line of ``exchange`` if it ended now: one JSON object and its newline."""
    when, duration_ms, worker = _now(), exchange.elapsed_ms(), process.pid()
    return _compiled_line(exchange, when, duration_ms, worker) or _line(
        exchange, when, duration_ms, worker
    )


def _line(exchange: Exchange, when: str, duration_ms: float, worker: int) -> str:
    """The access line of ``exchange``, which ended at ``when`` after ``duration_ms``.

    PERF: written field by field with the json module's own C string encoder, not built as a
    dict and passed to ``json.dumps``, and with no Python call per field; the text is the
    same (``tests/unit/test_accesslog.py`` compares the two) but for the duration, whose
    three decimals are always written (``3.490`` where ``json.dumps`` writes ``3.49``: ``.3f``
    costs a third of the shortest float ``repr``). ``when`` is gw's own ASCII timestamp: it
    needs no escaping. The values that repeat from request to request (the method, the
    route, the upstream and its target, the stages' field names) are escaped once each
    (``_QUOTED``).
    """
    extra = exchange.extra
    if not _BASE_FIELDS.isdisjoint(extra):
        return _ENCODE(_fields(exchange, when, duration_ms, worker)) + "\n"  # a stage's wins
    client, route = exchange.client, exchange.route
    method, upstream, target = exchange.method, exchange.upstream, exchange.upstream_target
    text = (
        f'{{"time":"{when}","request_id":{_str(exchange.request_id)},'
        f'"client":{"null" if client is None else _str(client.ip)},'
        f'"method":{_known(method) or _quoted(method)},'
        f'"path":{_str(exchange.path or exchange.raw_target[:512])},'
        f'"route":{_known(route) or _quoted(route)},'
        f'"upstream":{_known(upstream) or _quoted(upstream)},'
        f'"target":{_known(target) or _quoted(target)},'
        f'"status":{int(exchange.status)},"bytes":{int(exchange.bytes_sent)},'
        f'"duration_ms":{duration_ms:.3f},"worker":{worker}'
    )
    if exchange.error:
        text += f',"error":{_str(exchange.error)}'
    for name, value in extra.items():
        encoded = _str(value) if value.__class__ is str else _ENCODE(value)
        text += f",{_known(name) or _quoted(name)}:{encoded}"
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
# The JSON text of the values met before, by value (``None``: ``null``). Bounded
# (gw.core.bounded): clients choose the method.
_QUOTED: dict[str | None, str] = {None: "null"}
_known = _QUOTED.get


def _quoted(text: str | None) -> str:
    """The JSON text of ``text``, kept in ``_QUOTED`` while there is room."""
    return remember(_QUOTED, text, "null" if text is None else _str(text))


def _not_compiled(exchange: Exchange, when: str, duration_ms: float, worker: int) -> None:
    """The compiled form's answer where it is not built: the Python form makes the line."""
    return None


def _now() -> str:
    """The local time as ISO 8601 with its offset.

    PERF: ``strftime`` per line is most of a microsecond; the text changes once a second.
    """
    return _formatted(int(time.time()))


@functools.lru_cache(maxsize=1)
def _formatted(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(second))


# PERF: the lines made in C (gw/observe/_accessline.c), the same text as ``_line`` makes:
# about 4,200 instructions for a full pipeline's line where the Python form costs about 22,900,
# and a batch's lines with no Python step per line. Where gw was installed without a C compiler
# (setup.py builds it optionally), the Python form alone makes every line.
_compiled_line: Callable[[Exchange, str, float, int], str | None]
_batch_lines: Callable[[list[Exchange], float, int, Callable[[Exchange, float, int], str]], bytes]
try:
    from gw.observe import _accessline
except ImportError:
    _compiled_line, _batch_lines = _not_compiled, _python_lines
else:
    _accessline.configure(_QUOTED, _quoted, _str, _ENCODE, _BASE_FIELDS, _formatted, Exchange)
    _compiled_line, _batch_lines = _accessline.line, _accessline.lines
