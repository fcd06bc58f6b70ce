"""gunicorn worker class: gthread, made fair to keep-alive clients, with JSON parse errors.

Stock gthread workers accept greedily, and a kept-alive connection stays with the worker that
accepted it for its whole life. Pooled clients (nginx upstream keepalive, SDKs) can then pile
every connection onto one worker, capping the gateway at one GIL (PERF-NOTES measured a 3-4x
drop in a quarter of runs; the test suite sees all 1,200 requests of 8 pooled connections land
on one of two workers). Here a connection serves at most ``GW_KEEPALIVE_REQUESTS`` requests
(default 200, like nginx's ``keepalive_requests``): the last response says
``Connection: close``, the client opens a new connection, and the accept race is run again, so
an imbalance heals within a few hundred requests. A worker that is busy is slow to win that
race, which is what spreads the load.
"""

from __future__ import annotations

import json
import os
from typing import Any

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

from gw.headers import request_id

KEEPALIVE_REQUESTS = int(os.environ.get("GW_KEEPALIVE_REQUESTS", "200"))


class BalancedThreadWorker(ThreadWorker):  # type: ignore[misc]
    """A gthread worker that rotates kept-alive connections and answers parse errors in JSON."""

    def init_process(self) -> None:
        # Requests gunicorn's parser refuses (bad request line, too many or too large headers)
        # never reach the app; answer them in gw's JSON error shape too.
        util.write_error = write_json_error
        super().init_process()

    def handle_request(self, req: Any, conn: Any) -> bool:
        served = getattr(conn, "gw_served", 0) + 1
        conn.gw_served = served
        if served >= KEEPALIVE_REQUESTS:
            req.must_close = True  # the response carries "Connection: close"
        return bool(super().handle_request(req, conn))


_CODES = {
    400: "bad_request",
    403: "forbidden",
    414: "uri_too_long",
    417: "expectation_failed",
    431: "headers_too_large",
    500: "internal_error",
    501: "not_implemented",
}


def write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """Write gunicorn's own parse errors as gw's JSON error body."""
    rid = request_id(None)
    payload = {
        "error": _CODES.get(status_int, "bad_request"),
        "message": mesg or reason,
        "request_id": rid,
    }
    body = json.dumps(payload).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"X-Request-Id: {rid}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)
