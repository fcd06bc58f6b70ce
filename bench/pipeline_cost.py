"""The pipeline's own cost per request, in process: ``Gateway.handle`` without the server.

Runs ``--requests`` requests through ``Gateway.handle`` (ingress to egress, the upstream
answer read through gw's pool from a tiny raw-socket upstream on 127.0.0.1) for the plain
proxy path and the full pipeline (HS256 JWT, a per-user limit, metrics, the access log to
/dev/null), and prints CPU microseconds per request for each. ``full-dark`` is the full
pipeline with metrics and the access log off: the difference is what observability costs;
``full-no-log`` and ``full-no-metrics`` turn off one of the two. Another request stays in
flight throughout, as in a loaded worker.

Under callgrind a request takes about 50 times as long, so the work done every 0.1 s (the
access-log flusher, the metrics publisher) is shared by about 50 times fewer requests than in
a real worker, and weighs more in the observability rows' instruction counts. ``--tick-every
N`` does that work every N requests instead, as a worker serving 10N requests/s does (a gw
worker on the bench serves about 2,500: ``--tick-every 250``).

What it is for: comparing one step of work on the request path with the step before it on a
busy machine. It imports gw from the tree it sits in, ahead of ``PYTHONPATH``: to count another
tree (``git archive COMMIT``), run that tree's own copy of this script. Under ``valgrind
--tool=callgrind`` the instruction counts are repeatable whatever else the machine does
(``--callgrind``: runs each row under valgrind and prints instructions per request, the plain
row subtracted from the full one too). It leaves out the edge server (gevent, llhttp, the
client socket), which ``bench/run.py`` measures whole, unless ``--edge`` is given: then each
request comes in through gw's own edge (``gw.edge.connection``: llhttp, the WSGI environ, the
answer's framing) and the Falcon app, on one kept-alive client connection whose client always
has its next request ready. Only gevent's hub is left out.

Instructions are not the whole cost. A request that touches more code and data than the L2
cache holds pays a trip to L3 for each line it finds evicted, and the same code timed in a
tight loop never does. ``--cachegrind`` counts those misses too, repeatably: cachegrind
simulates this CPU's L1 caches and its L2 (as its last level; its policy is strict LRU,
harsher than a real core's, so the misses are an upper bound). ``bench/README.md``, "a
request's working set is larger than this CPU's L2", has what it found.

    .venv/bin/python bench/pipeline_cost.py                 # CPU µs per request
    .venv/bin/python bench/pipeline_cost.py --callgrind     # instructions per request
    .venv/bin/python bench/pipeline_cost.py --inline-upstream --rows plain,full-dark
        # the upstream answers within gw's send, in the same thread (steadier CPU figures)
    .venv/bin/python bench/pipeline_cost.py --callgrind --inline-upstream --edge --rows plain
        # the whole path of a worker but its hub: edge, Falcon, pipeline
    .venv/bin/python bench/pipeline_cost.py --callgrind --inline-upstream --edge \
        --tick-every 250 --rows full,full-dark,full-no-log,full-no-metrics
        # what observability costs, its periodic work at a loaded worker's rate
    .venv/bin/python bench/pipeline_cost.py --cachegrind --inline-upstream --edge \
        --tick-every 250 --rows plain,full
        # instructions and cache misses per request, this CPU's L1 and L2 simulated by
        # cachegrind (--l2 1024,16: a 1 MiB 16-way L2 instead, to size the working set)
    .venv/bin/python bench/pipeline_cost.py --inline-upstream --edge --row plain --trace 40
        # Python bytecodes and calls per request, the 40 functions that run the most
        # bytecodes, and every exception raised on the request path (sys.settrace; slow)
    .venv/bin/python bench/pipeline_cost.py --callgrind --inline-upstream --edge --stub wsgi
        # the edge alone: a bare WSGI app gives every request the answer gw gave the first
        # (--stub falcon: the Falcon app around a stub gateway)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from proxybench.callgrind import Cache, Caches, Misses, cache_misses, instructions, this_cpu

ROOT = Path(__file__).resolve().parent.parent
# gw from this tree, as gunicorn's working directory gives the bench's gw rows: a virtualenv
# with gw installed (``--gw-venv``'s) would otherwise measure its installed copy.
sys.path.insert(1, str(ROOT))
SECRET = "bench-secret-that-is-long-enough-for-hs256-0123456789"
ROWS = ("plain", "full", "full-dark", "full-no-log", "full-no-metrics")
METRICS_ON = ("full", "full-no-log")  # full-dark: the full pipeline, no metrics, no access log
ACCESS_LOG_ON = ("full", "full-no-metrics")
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 27\r\nContent-Type: text/plain\r\n\r\n" + b"x" * 27


def upstream() -> int:
    """A raw HTTP/1.1 upstream: the same 27-byte answer to every GET, keep-alive."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve(conn: socket.socket) -> None:
        buffered = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffered:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffered += data
                _, _, buffered = buffered.partition(b"\r\n\r\n")
                conn.sendall(ANSWER)

    def accept() -> None:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return int(listener.getsockname()[1])


class _AnsweringSocket(socket.socket):
    """gw's end of a socketpair whose other end answers inside ``send``: no thread."""

    peer: socket.socket

    def send(self, data: Any, flags: int = 0) -> int:
        sent = super().send(data, flags)
        self.peer.recv(65536)
        self.peer.sendall(ANSWER)
        return sent


def inline_connect(target: Any, timeout: float) -> Any:
    """A ``Connector`` (``gw.upstream.pool``) whose upstream answers within gw's own send,
    in this thread: no second thread to hand the GIL to, so the figures move less."""
    from urllib3.connection import HTTPConnection

    ours, theirs = socket.socketpair()
    answering = _AnsweringSocket(ours.family, ours.type, ours.proto, fileno=ours.detach())
    answering.peer = theirs
    conn = HTTPConnection(target.host, target.port, timeout=timeout)
    conn.sock = answering
    return conn


def config(row: str, port: int) -> dict[str, Any]:
    plain: dict[str, Any] = {
        "upstreams": {"bench": {"targets": [f"http://127.0.0.1:{port}"]}},
        "routes": [{"name": "bench", "path": "/api/**", "upstream": "bench"}],
    }
    if row == "plain":
        return plain
    return {
        **plain,
        "metrics": {"enabled": row in METRICS_ON},
        "auth": {
            "type": "jwt",
            "issuer": "https://bench.local",
            "secret": SECRET,
            "audiences": ["bench"],
            "algorithms": ["HS256"],
        },
        "rate_limiting": {
            "default": {
                "requests_per_second": 1000000,
                "burst": 1000000,
                "key": "user",
                "when_missing": "reject",
            }
        },
    }


def environ(token: str | None) -> dict[str, Any]:
    env: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": "/api/x",
        "PATH_INFO": "/api/x",
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8080",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "HTTP_HOST": "127.0.0.1:8080",
        "HTTP_USER_AGENT": "wrk",
        "HTTP_ACCEPT": "*/*",
    }
    if token:
        env["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return env


class _ClientSocket(socket.socket):
    """The edge's end of a socketpair whose other end is a client that always has its next
    request ready: each ``recv`` first sends it one, each ``send`` is read off at once."""

    peer: socket.socket
    request: bytes
    remaining: int
    answered: int  # answers that began "HTTP/1.1 200"

    def recv(self, size: int, flags: int = 0) -> bytes:
        if self.remaining > 0:
            self.remaining -= 1
            self.peer.sendall(self.request)
            return super().recv(size, flags)
        return b""  # the client is done: the connection ends

    def send(self, data: Any, flags: int = 0) -> int:
        sent = super().send(data, flags)
        self.answered += self.peer.recv(65536).startswith(b"HTTP/1.1 200 ")
        return sent


def ticking_every(requests: int | None) -> Callable[[], None]:
    """Return the tick to call after each request. With ``requests``, the work that a worker
    does every 0.1 s (the batches of finished requests, the metrics publisher) is done every
    ``requests`` requests instead, by the tick: what a worker serving ``10 * requests``
    requests/s does, however slowly this process runs (callgrind runs it about 50 times
    slower, so at 0.1 s that work would weigh about 50 times more per request)."""
    if requests is None:
        return lambda: None
    from gw.observe import batches, published

    batches.MAX_WAIT = published.PUBLISH_EVERY = 1e9  # read when their threads start
    count = 0

    def tick() -> None:
        nonlocal count
        count += 1
        if count % requests == 0:
            batches.flush()
            published.publish()

    return tick


def edge_serve(app: Any, token: str | None, tick: Callable[[], None]) -> Any:
    """Return ``serve(n)``: ``n`` requests on one kept-alive client connection, in through
    gw's edge (``gw.edge.connection``, llhttp, the WSGI environ) and the Falcon app."""
    from gunicorn.config import Config
    from gunicorn.http.wsgi import base_environ

    from gw.edge.connection import Connection
    from gw.edge.request import Limits
    from gw.edge.worker import write_json_error

    head = "GET /api/x HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n"
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    base = base_environ(Config())  # as gw.edge.worker makes it
    base.update({"wsgi.multithread": True, "SERVER_SOFTWARE": "gw"})

    def serve(n: int) -> None:
        ours, theirs = socket.socketpair()
        sock = _ClientSocket(ours.family, ours.type, ours.proto, fileno=ours.detach())
        sock.peer, sock.request, sock.remaining = theirs, (head + "\r\n").encode(), n
        sock.answered = 0
        with sock, theirs:
            Connection(
                sock,
                ("127.0.0.1", 40000),
                ("127.0.0.1", 8080),
                app,
                Limits(requests=n + 1),
                base,
                write_json_error,
                next_request=lambda: True,
                running=lambda: True,
                pause=tick,  # after each answer
            ).serve()
            assert sock.answered == n, f"{sock.answered} of {n} requests answered 200"

    return serve


def stub_app(gateway: Any, token: str | None, kind: str) -> Any:
    """An app that answers every request as ``gateway`` answered one: the same status, header
    fields and body, without running the pipeline. ``falcon``: gw's Falcon app around a stub
    gateway; ``wsgi``: a bare WSGI app."""
    from gw.app import create_app
    from gw.core.exchange import Outcome

    outcome = gateway.handle(environ(token))
    status, headers = outcome.status, list(outcome.headers)
    body = b"".join(outcome.body)
    getattr(outcome.body, "close", lambda: None)()  # logs it, as the server would

    class Stub:
        def handle(self, environ: Any) -> Outcome:
            return Outcome(status, headers, [body])

    if kind == "falcon":
        return create_app(Stub())
    reason = f"{status} OK"

    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response(reason, list(headers))
        return [body]

    return app


def run_row(
    row: str,
    requests: int,
    inline: bool = False,
    edge: bool = False,
    stub: str | None = None,
    tick_every: int | None = None,
    trace: int | None = None,
) -> float:
    """Serve ``requests`` requests in process; return CPU µs per request (after warm-up).

    ``trace``: report what the requests after the warm-up ran (``Trace``), its top ``trace``
    functions, on stderr."""
    with tempfile.TemporaryDirectory(prefix="gw-pipeline-cost-") as runtime:
        tracer = Trace() if trace else None
        cost = _serve(row, requests, runtime, inline, edge, stub, tick_every, tracer)
        if tracer is not None:
            tracer.report(requests, trace or 0)
        return cost


class Trace:
    """Python bytecodes and calls, by function, and exceptions raised, by where (settrace).

    PERF work's map: a request's cost is spread over ~150 Python calls, and the count of
    bytecodes each runs says where the interpreter's work is (a bytecode costs about 70
    instructions here, its C callees included). An exception raised and caught on the
    request path costs thousands of instructions and shows in no profile of gw's own code.
    """

    def __init__(self) -> None:
        self.bytecodes: Counter[Any] = Counter()
        self.calls: Counter[Any] = Counter()
        self.exceptions: Counter[tuple[str, str]] = Counter()

    def __enter__(self) -> None:
        sys.settrace(self._event)

    def __exit__(self, *_: object) -> None:
        sys.settrace(None)

    def _event(self, frame: Any, event: str, arg: Any) -> Any:
        code = frame.f_code
        if event == "opcode":
            self.bytecodes[code] += 1
        elif event == "call":
            frame.f_trace_opcodes = True
            self.calls[code] += 1
        elif event == "exception":
            self.exceptions[(_where(code, frame.f_lineno), arg[0].__name__)] += 1
        return self._event

    def report(self, requests: int, top: int) -> None:
        per = max(1, requests)
        write = sys.stderr.write
        write(
            f"per request: {sum(self.bytecodes.values()) / per:,.0f} bytecodes, "
            f"{sum(self.calls.values()) / per:,.1f} Python calls, "
            f"{sum(self.exceptions.values()) / per:.2f} exceptions raised\n"
        )
        for (where, name), count in self.exceptions.most_common():
            write(f"  exception {name} at {where}: {count / per:.2f} a request\n")
        write("bytecodes  calls  function (per request)\n")
        for code, count in self.bytecodes.most_common(top):
            where = _where(code, code.co_firstlineno)
            write(f"{count / per:9.1f} {self.calls[code] / per:6.2f}  {where} {code.co_name}\n")


def _where(code: Any, line: int) -> str:
    path = code.co_filename
    for root in (str(ROOT) + "/", *(p + "/" for p in sys.path if p.endswith("-packages"))):
        if path.startswith(root):
            path = path[len(root) :]
            break
    return f"{path}:{line}"


def _serve(
    row: str,
    requests: int,
    runtime: str,
    inline: bool,
    edge: bool,
    stub: str | None,
    tick_every: int | None,
    tracer: Trace | None = None,
) -> float:
    os.environ["GW_RUNTIME_DIR"] = runtime
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = runtime
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # the access log's lines
    import jwt

    from gw.config.load import parse_config
    from gw.limits import shared
    from gw.observe import accesslog
    from gw.pipeline import Gateway

    shared.create_in(runtime)
    token = None
    if row.startswith("full"):
        now = int(time.time())
        claims = {"iss": "https://bench.local", "aud": "bench", "sub": "user-1", "exp": now + 3600}
        token = jwt.encode(claims, SECRET, algorithm="HS256")
    accesslog.configure(row in ACCESS_LOG_ON)
    tick = ticking_every(tick_every)
    if inline:
        never_dialled = 9  # inline_connect answers for the target's address
        settings = parse_config(config(row, never_dialled), environ={})
        gateway = Gateway(settings, connect=inline_connect)
    else:
        gateway = Gateway(parse_config(config(row, upstream()), environ={}))
    # As in a worker under load, another request is always in flight.
    from gw.core.exchange import Exchange
    from gw.edge import inflight

    inflight.started(Exchange(request_id="bench-other", method="GET", raw_target="/"))

    def one() -> None:
        outcome = gateway.handle(environ(token))
        body = outcome.body
        for _ in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()
        assert outcome.status == 200, outcome.status

    if edge:
        from gw.app import create_app

        app = create_app(gateway) if stub is None else stub_app(gateway, token, stub)
        serve = edge_serve(app, token, tick)
        serve(200)  # warm-up, also in the 0-request run that --callgrind subtracts
        started = time.process_time()
        with tracer or contextlib.nullcontext():
            serve(requests)
        return (time.process_time() - started) / max(1, requests) * 1e6
    for _ in range(200):  # warm-up, also in the 0-request run that --callgrind subtracts
        one()
        tick()
    started = time.process_time()
    with tracer or contextlib.nullcontext():
        for _ in range(requests):
            one()
            tick()
    return (time.process_time() - started) / max(1, requests) * 1e6


def callgrind(row: str, requests: int, options: list[str]) -> int:
    """Instructions for ``requests`` more requests than a 0-request run (start-up excluded)."""
    start, run = (instructions(argv, ROOT) for argv in _row_runs(row, requests, options))
    return (run - start) // max(1, requests)


def cachegrind(row: str, requests: int, options: list[str], caches: Caches) -> Misses:
    """Instructions and cache misses per request, as ``callgrind`` counts (start-up excluded)."""
    start, run = (cache_misses(argv, caches, ROOT) for argv in _row_runs(row, requests, options))
    return (run - start).per(requests)


def _row_runs(row: str, requests: int, options: list[str]) -> list[list[str]]:
    """The command lines of one ``row`` with 0 requests and with ``requests``: the second's
    count less the first's is the requests' own."""
    return [
        [sys.executable, __file__, "--row", row, "--requests", str(n), *options]
        for n in (0, requests)
    ]


def simulated(l2: str | None) -> Caches:
    """This CPU's caches, with ``l2`` (``KIB,WAYS``) in place of its L2 when given."""
    caches = this_cpu()
    if l2 is None:
        return caches
    kib, ways = (int(part) for part in l2.split(","))
    return Caches(caches.l1i, caches.l1d, Cache(kib * 1024, ways, caches.l2.line))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--row", choices=ROWS, help="one row, in this process")
    parser.add_argument("--rows", default="plain,full", help=f"rows to run, of {','.join(ROWS)}")
    parser.add_argument("--callgrind", action="store_true", help="instructions per request")
    parser.add_argument(
        "--cachegrind",
        action="store_true",
        help="instructions and simulated cache misses (this CPU's L1 and L2) per request",
    )
    parser.add_argument(
        "--l2",
        metavar="KIB,WAYS",
        help="with --cachegrind: simulate this L2 instead of this CPU's (e.g. 1024,16)",
    )
    parser.add_argument(
        "--inline-upstream",
        action="store_true",
        help="the upstream answers on a socketpair within gw's send (no thread): steadier",
    )
    parser.add_argument(
        "--edge",
        action="store_true",
        help="requests come in through gw's edge and the Falcon app on one kept-alive client "
        "connection, as in a worker (without gevent's hub)",
    )
    parser.add_argument(
        "--stub",
        choices=("falcon", "wsgi"),
        help="with --edge: the pipeline is left out, and every request gets the answer gw gave "
        "the first one; falcon: from the Falcon app around a stub; wsgi: from a bare WSGI app",
    )
    parser.add_argument(
        "--tick-every",
        type=int,
        metavar="N",
        help="do the access-log flusher's and the metrics publisher's work every N requests "
        "instead of every 0.1 s: a worker serving 10N requests/s, whatever this process's speed "
        "(use with --callgrind, e.g. 250)",
    )
    parser.add_argument(
        "--trace",
        type=int,
        metavar="N",
        help="with --row: Python bytecodes, calls and exceptions per request, and the N "
        "functions that run the most bytecodes (sys.settrace: slow; use a few hundred requests)",
    )
    args = parser.parse_args()
    if args.trace and not args.row:
        parser.error("--trace needs --row")
    if args.stub and not args.edge:
        parser.error("--stub needs --edge")
    if args.cachegrind and args.callgrind:
        parser.error("--cachegrind counts instructions too: give one of the two")
    if args.l2 and not args.cachegrind:
        parser.error("--l2 needs --cachegrind")
    if args.l2 and not re.fullmatch(r"\d+,\d+", args.l2):
        parser.error("--l2 takes KIB,WAYS, e.g. 1024,16")
    options = ["--inline-upstream"] if args.inline_upstream else []
    options += ["--edge"] if args.edge else []
    options += ["--stub", args.stub] if args.stub else []
    options += ["--tick-every", str(args.tick_every)] if args.tick_every else []
    if args.row:
        cost = run_row(
            args.row,
            args.requests,
            args.inline_upstream,
            args.edge,
            args.stub,
            args.tick_every,
            args.trace,
        )
        print(f"{args.row}: {cost:.1f} CPU µs/request", file=sys.stderr)
        return
    caches = simulated(args.l2) if args.cachegrind else None
    for row in args.rows.split(","):
        if caches is not None:
            cost = cachegrind(row, min(args.requests, 2000), options, caches)
            print(
                f"{row}: {cost.instructions:,} instructions/request; misses/request: "
                f"L1i {cost.l1i:,}, L1d {cost.l1d:,}, L2 {cost.l2:,} (L2 {caches.l2})"
            )
        elif args.callgrind:
            count = callgrind(row, min(args.requests, 2000), options)
            print(f"{row}: {count:,} instructions/request")
        else:
            requests = str(args.requests)
            result = subprocess.run(
                [sys.executable, __file__, "--row", row, "--requests", requests, *options],
                check=True,
                capture_output=True,
                text=True,
            )
            print(result.stderr.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
