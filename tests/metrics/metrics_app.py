"""A tiny WSGI app counting its requests through gw.observe.instruments, for the multi-worker test.

``/orders/...`` and ``/users/...`` answer 200 on routes ``orders`` and ``users``; anything else
is a 404 on no route. ``/metrics`` is the scrape (not counted). ``/hang`` holds a request in
flight with the ``orders`` breaker open, writing its pid to ``$METRICS_TEST_HANG_FILE``, until
the worker is killed (or 20 s pass). Every answer names its worker in ``X-Worker``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from gw.core.exchange import Exchange
from gw.observe import batches
from gw.observe.instruments import Metrics, worker_metrics

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
ROUTES = {"orders": "200 OK", "users": "200 OK"}
_serving = [0]  # requests in flight in this worker (gw's pipeline keeps gw.edge.inflight)


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    instruments = worker_metrics()
    instruments.watch_inflight(lambda: _serving[0])
    path = environ["PATH_INFO"]
    if path == "/metrics":
        content_type, body = instruments.render(environ)
        return _answer(start_response, "200 OK", content_type, body)
    if path == "/hang":
        return _hang(instruments, start_response)
    started = time.monotonic()
    _serving[0] += 1
    route = path.split("/")[1] if path.count("/") >= 2 else ""
    status = ROUTES.get(route, "404 Not Found")
    _serving[0] -= 1
    exchange = Exchange("req-1", environ["REQUEST_METHOD"], path)
    exchange.started = started
    exchange.route = route if route in ROUTES else None
    exchange.status = int(status[:3])
    batches.add(exchange)  # as gw's pipeline does when an answer is done
    return _answer(start_response, status, "text/plain", b"ok\n")


def _hang(instruments: Metrics, start_response: StartResponse) -> Iterable[bytes]:
    _serving[0] += 1
    instruments.publish()  # the gauge must be seen while this request hangs
    with open(os.environ["METRICS_TEST_HANG_FILE"], "w") as out:
        out.write(str(os.getpid()))
    time.sleep(20)  # bounded: the test kills this worker long before
    _serving[0] -= 1
    return _answer(start_response, "200 OK", "text/plain", b"woke\n")


def _answer(
    start_response: StartResponse, status: str, content_type: str, body: bytes
) -> Iterable[bytes]:
    start_response(
        status,
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("X-Worker", str(os.getpid())),
        ],
    )
    return [body]
