"""gunicorn worker classes: fair to keep-alive clients, with JSON parse errors.

``BalancedGeventWorker`` (the default) serves each connection in a greenlet, one thread per
process, and speaks HTTP/1.1 through ``gw.edge.connection`` (llhttp) instead of gunicorn's
pure-Python parser. gunicorn still runs the processes: forking, heartbeats, signals, graceful stops,
``max_requests``. On the 2-core bench box a request costs about half the CPU of gunicorn's
gthread worker, whose threads spend their time passing the GIL and the poller between each
other (bench/README.md has the figures). ``BalancedThreadWorker`` stays for deployments that
cannot use gevent's monkey-patching; plain ``sync`` works too.

Both rotate kept-alive connections. Stock workers accept greedily, and a kept-alive connection
stays with the worker that accepted it for its whole life. Pooled clients (nginx upstream
keepalive, SDKs) can then pile every connection onto one worker, capping the gateway at one
core (PERF-NOTES measured a 3-4x drop in a quarter of runs; the test suite sees all 1,200
requests of 8 pooled connections land on one of two workers). Here a connection serves at most
``GW_KEEPALIVE_REQUESTS`` requests (default 200; nginx's ``keepalive_requests``, the same
cap, was 100 until nginx 1.19.10 and is 1000 since: a lower cap heals sooner): the last
response says ``Connection: close``, the client opens a new connection, and the accept race is
run again, so an imbalance heals within a few hundred requests. A worker that is busy is slow
to win that race, which is what spreads the load.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import gevent
from gunicorn import util
from gunicorn.http.wsgi import base_environ
from gunicorn.workers.ggevent import GeventWorker
from gunicorn.workers.gthread import ThreadWorker

from gw.core.headers import request_id
from gw.edge.arbiter import worker_stop_limit
from gw.edge.connection import Connection
from gw.edge.request import Limits
from gw.edge.waiting import WaitingConnections
from gw.errors import EdgeError

KEEPALIVE_REQUESTS = int(os.environ.get("GW_KEEPALIVE_REQUESTS", "200"))


class BalancedGeventWorker(GeventWorker):  # type: ignore[misc]
    """gunicorn's gevent worker with gw's HTTP/1.1 connection handling (``gw.edge.connection``)."""

    def init_process(self) -> None:
        cfg = self.cfg
        self.limits = Limits(
            request_line=cfg.limit_request_line or 1 << 20,
            fields=cfg.limit_request_fields or 32768,
            field_size=cfg.limit_request_field_size or 8190,  # gunicorn's meaning of 0
            keepalive=float(cfg.keepalive or 2),
            timeout=float(cfg.timeout or 30),
            requests=KEEPALIVE_REQUESTS,
        )
        self.environ = base_environ(cfg)
        self.environ.update({"wsgi.multithread": True, "SERVER_SOFTWARE": "gw"})
        # APPSEC: a worker facing clients directly must not be taken down by connections that
        # send nothing (idle keep-alive, slow headers). Above ``worker_connections`` the one
        # that has waited longest for a head is shed; gevent's pool gets headroom above the
        # cap so that accepting (and so shedding) goes on while the cap is reached.
        self.connection_cap = max(1, int(cfg.worker_connections))
        self.worker_connections = self.connection_cap + max(16, self.connection_cap // 8)
        self.open_connections = 0
        self.waiting = WaitingConnections()
        leave_cutting_to_the_master(cfg)
        super().init_process()

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        self.open_connections += 1
        try:
            if self.open_connections > self.connection_cap and not self.waiting.shed_oldest():
                write_json_error(client, 503, "Service Unavailable", "too many connections")
                return
            self._serve(listener, client, addr)
        finally:
            self.open_connections -= 1
            util.close(client)

    def _serve(self, listener: Any, client: Any, addr: Any) -> None:
        server = listener.getsockname()
        conn = Connection(
            client,
            addr,
            server,
            self.wsgi,
            self.limits,
            self.environ,
            write_json_error,
            self.next_request,
            self.running,
            Turns().take,
            self.waiting,
        )
        conn.serve()

    def running(self) -> bool:
        return bool(getattr(self, "alive"))  # noqa: B009 (gunicorn sets it untyped)

    def next_request(self) -> bool:
        """Count a request; return False once the worker should close connections and stop."""
        self.nr += 1
        alive = self.running()
        if self.nr >= self.max_requests and alive:
            self.log.info("Autorestarting worker after current request.")
            self.alive = alive = False
        return alive


def leave_cutting_to_the_master(cfg: Any) -> None:
    """Keep serving after SIGTERM until the master cuts (``gw.edge.arbiter``), not at
    ``graceful_timeout``.

    gunicorn's gevent worker cuts its requests ``graceful_timeout`` seconds after SIGTERM,
    without naming them; its gthread worker stops managing its connections then. After a
    reload the drain limit (``GW_DRAIN_TIMEOUT``) applies instead; on a full stop the master
    still cuts at ``graceful_timeout``. Either way the master sends SIGQUIT first, which
    names every request cut (``worker_int`` in gunicorn.conf.py). This changes the worker's
    own copy of the settings only (it runs after the fork).
    """
    cfg.set("graceful_timeout", worker_stop_limit(float(cfg.graceful_timeout)))


class Turns:
    """One connection's fair share of its worker: ``take`` after each answer
    (``Connection.pause``) lets every other connection of the worker that is ready run first.

    A connection whose reads never wait (its upstream has answered and its client has sent the
    next request before it asks) would otherwise keep the worker for hundreds of requests while
    the others' answers sit unread. One that waited since its last turn (for a read, say) has
    had its turn: the loop polled while it waited, and every connection that poll found ready
    ran.

    PERF: the loop's iteration count says whether it polled since the last turn (the loop
    cannot poll while this greenlet runs), so a turn is paused only when it did not: a pause
    costs a timer and two switches, a skipped turn 0.3 µs. A loop that does not count
    (gevent's libuv loop always says -1) pauses every turn. And the pause is a due timer, not
    ``gevent.sleep(0)``, which would resume this greenlet before the loop next polls, so
    connections whose upstream answers have arrived would still wait behind the ones that
    never wait. A timer that is already due fires only after that poll. Bench, 64
    connections: p99 73-85 ms with ``sleep(0)``, 35-42 ms with the timer, same requests/s.
    The connection keeps its timer and starts it for each pause, as ``gevent.sleep`` starts
    the one it makes: 10.4k instructions a pause against ``gevent.sleep``'s 18.3k
    (``bench/wait_cost.py``).
    """

    __slots__ = ("_hub", "_loop", "_pause", "_polls")

    def __init__(self) -> None:
        self._hub = gevent.get_hub()
        self._loop = self._hub.loop
        self._pause = self._loop.timer(0.000001)
        self._polls = self._loop.iteration  # made by the connection's greenlet as it starts

    def take(self) -> None:
        loop = self._loop
        if loop.iteration == self._polls:  # it never waited since its last turn
            loop.update_now()  # the timer counts from now, as gevent.sleep's does
            self._hub.wait(self._pause)
        self._polls = loop.iteration


class BalancedThreadWorker(ThreadWorker):  # type: ignore[misc]
    """A gthread worker that rotates kept-alive connections and answers parse errors in JSON."""

    def init_process(self) -> None:
        util.write_error = write_json_error
        leave_cutting_to_the_master(self.cfg)
        super().init_process()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self.wsgi = closing_when_asked(getattr(self, "wsgi"))  # noqa: B009 (gunicorn sets it untyped)

    def handle_request(self, req: Any, conn: Any) -> bool:
        rotate(req)
        return bool(super().handle_request(req, conn))

    def handle_quit(self, sig: int, frame: Any) -> None:
        """SIGQUIT/SIGINT: stop now, cutting the requests in flight (``worker_int`` names them).

        gunicorn's ``sys.exit()`` would not cut them here: at exit the interpreter waits for
        the pool's threads, and so for every request they still serve (the master SIGKILLs
        the worker ``QUIT_GRACE`` seconds later). Leave without waiting instead.
        """
        try:
            super().handle_quit(sig, frame)
        except SystemExit:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)


def closing_when_asked(app: Any) -> Any:
    """Close the connection after an answer whose headers say ``Connection: close``.

    gunicorn's response drops the app's hop-by-hop headers without acting on them; gw's
    own server (gw.edge.reply) honours this one, and so must the threaded worker: gw asks for it
    after refusing a malformed request, whose connection must carry nothing more.
    """

    def wsgi(environ: Any, start_response: Any) -> Any:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if any(n.lower() == "connection" and "close" in v.lower() for n, v in headers):
                start_response.__self__.force_close()  # gunicorn's Response
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return wsgi


def rotate(req: Any) -> None:
    """Close the connection after its ``KEEPALIVE_REQUESTS``-th request (see the docstring)."""
    if req.req_number >= KEEPALIVE_REQUESTS:
        req.must_close = True  # the response carries "Connection: close"


def write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """Write gunicorn's own parse errors as gw's JSON error body.

    Requests gunicorn's parser refuses (bad request line, too many or too large headers) never
    reach the app; this answers them in gw's JSON error shape too.
    """
    rid = request_id(None)
    body = EdgeError(status_int, mesg or reason).render(rid)
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"X-Request-Id: {rid}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)
