"""One JSON line per request, written when the response body is finished."""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from gw.core.exchange import Exchange

_logger = logging.getLogger("gw.access")


def configure(enabled: bool) -> None:
    """Send access lines to stdout, one JSON object each, unless disabled."""
    _logger.propagate = False
    _logger.setLevel(logging.INFO if enabled else logging.CRITICAL)
    if enabled and not _logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        _logger.addHandler(handler)


def configure_diagnostics() -> None:
    """Send gw's own warnings and errors (gw, gw.observe.audit, gw.ratelimit, ...) to stderr."""
    logger = logging.getLogger("gw")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")
        )
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def write(exchange: Exchange) -> None:
    """Log ``exchange`` as one JSON line."""
    if not _logger.isEnabledFor(logging.INFO):
        return
    client = exchange.client
    line = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "request_id": exchange.request_id,
        "client": client.ip if client else None,
        "method": exchange.method,
        "path": exchange.path or exchange.raw_target[:512],
        "route": exchange.route,
        "upstream": exchange.upstream,
        "target": exchange.upstream_target,
        "status": exchange.status,
        "bytes": exchange.bytes_sent,
        "duration_ms": round(exchange.elapsed_ms(), 3),
        "worker": os.getpid(),
    }
    if exchange.error:
        line["error"] = exchange.error
    line.update(exchange.extra)
    _logger.info(json.dumps(line, separators=(",", ":")))
