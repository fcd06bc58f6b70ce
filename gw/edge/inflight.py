"""The requests this worker process is serving right now, so that a worker stopped in the
middle of them (the drain limit after a reload, a quick shutdown) names each one it cuts.

The pipeline registers an exchange when it starts and forgets it when its access line is
written. Dict operations are atomic under the GIL, so gthread's threads and gevent's greenlets
share one registry without a lock; ``report_cut`` reads a copy.
"""

from __future__ import annotations

from typing import Protocol

from gw.core.exchange import Exchange


class WarningLog(Protocol):
    """gunicorn's logger or a ``logging.Logger``."""

    def warning(self, msg: str, *args: object) -> None: ...


_serving: dict[int, Exchange] = {}


def started(exchange: Exchange) -> None:
    _serving[id(exchange)] = exchange


def finished(exchange: Exchange) -> None:
    _serving.pop(id(exchange), None)


def serving() -> int:
    """How many requests this worker is serving now (the in-flight gauge)."""
    return len(_serving)


def report_cut(log: WarningLog, pid: int) -> int:
    """Log one line per request still being served by this worker; return how many."""
    cut = list(_serving.values())
    for exchange in cut:
        log.warning(
            "request %s cut: worker %s stopped while serving %s %s "
            "(status %s, %d response bytes sent, %.1f s)",
            exchange.request_id,
            pid,
            exchange.method,
            exchange.path or exchange.raw_target[:512],
            exchange.status or "not sent",
            exchange.bytes_sent,
            exchange.elapsed_ms() / 1000.0,
        )
    return len(cut)
