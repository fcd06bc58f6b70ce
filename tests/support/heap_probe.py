"""gw's app, loaded as ``gunicorn gw.app:app`` loads it, plus ``GET /heap-probe``: what the
worker's garbage collector is set to (``gc.get_freeze_count``, ``gc.get_threshold``)."""

from __future__ import annotations

import gc
import json
from collections.abc import Callable, Iterable
from typing import Any

from gw.app import app as gateway  # built here, at load, as gunicorn builds gw's


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO") != "/heap-probe":
        return gateway(environ, start_response)  # type: ignore[no-any-return]
    body = json.dumps({"frozen": gc.get_freeze_count(), "threshold": gc.get_threshold()})
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body.encode()]
