"""The library's whole contract with real sockets and processes: four workers send requests to
three real targets; one target is SIGKILLed mid-run. Requests that hit it before its ejection
are retried on another target (nothing was sent), so clients see no error, and once it is
ejected it gets nothing but the half-open probes."""

from __future__ import annotations

import http.client
import multiprocessing
import os
import signal
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from gw.health import NoHealthyTarget
from gw.health.balancer import Balancer
from gw.health.choice import BAD_RESPONSE, PassivePolicy, TargetChoice
from gw.health.snapshot import snapshot
from gw.health.state import create
from gw.health.table import HealthTable

FORK = multiprocessing.get_context("fork")
POLICY = PassivePolicy(consecutive_failures=5, cooldown=0.5, max_cooldown=2, probe_timeout=2)
RUN_SECONDS = 1.5


class _Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # keep-alive: head and body are two writes

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve(sock: socket.socket) -> None:
    server = ThreadingHTTPServer(sock.getsockname(), _Ok, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    server.serve_forever()


def _send(url: str) -> int:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=2)
    try:
        conn.request("GET", "/orders/1")
        with conn.getresponse() as response:
            response.read()
            return response.status
    finally:
        conn.close()


def _request(b: Balancer, log: list[tuple[int, int, bool]]) -> bool:
    """Send one idempotent request, on another target when one fails it (at most 3 tries).

    A GET that got no complete answer is safe to send again: a killed target resets the
    connections it had accepted, or breaks off an answer it had begun.
    """
    tried: set[int] = set()
    for _ in range(3):
        choice: TargetChoice = b.pick(avoid=tried)
        log.append((time.monotonic_ns(), choice.target_index, choice.probe))
        try:
            status = _send(b.urls[choice.target_index])
        except http.client.HTTPException:
            choice.done(False, BAD_RESPONSE)
        except OSError as ex:  # refused, reset, closed without an answer, timed out
            choice.failed(ex)
        else:
            choice.answered(status)
            return status == 200
        tried.add(choice.target_index)
    return False


def _worker(path: str, urls: list[str], stop_at: int, pipe: Connection) -> None:
    table = HealthTable.open(path)
    b = Balancer("orders", [(u, 1) for u in urls], passive=POLICY, table=lambda: table)
    log: list[tuple[int, int, bool]] = []
    ok = errors = 0
    while time.monotonic_ns() < stop_at and ok + errors < 5000:
        try:
            succeeded = _request(b, log)
        except NoHealthyTarget:
            succeeded = False  # counted as a client error
        ok += succeeded
        errors += not succeeded
    pipe.send((ok, errors, log))


def start_target() -> tuple[Any, str]:
    """Start a target in its own process (a real backlog, its own GIL; SIGKILLable)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    child = FORK.Process(target=_serve, args=(sock,), daemon=True)
    child.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    return child, url


def test_a_target_killed_mid_run_costs_no_client_errors_and_gets_only_probes(
    tmp_path: Path,
) -> None:
    targets = [start_target() for _ in range(3)]
    urls = [url for _, url in targets]
    doomed = targets[1][0]
    path = str(tmp_path / "health.table")
    create(path, [("orders", u) for u in urls])
    stop_at = time.monotonic_ns() + int(RUN_SECONDS * 1e9)
    workers = []
    for _ in range(4):
        ours, theirs = FORK.Pipe()
        FORK.Process(target=_worker, args=(path, urls, stop_at, theirs), daemon=True).start()
        workers.append(ours)
    time.sleep(0.4)
    os.kill(doomed.pid, signal.SIGKILL)
    killed_at = time.monotonic_ns()
    doomed.join(5)
    results = [ours.recv() for ours in workers if ours.poll(RUN_SECONDS + 10)]
    assert len(results) == 4
    assert sum(r[1] for r in results) == 0, "a client saw an error"
    attempts = sorted(entry for r in results for entry in r[2])
    before = [a for a in attempts if a[0] < killed_at and a[1] == 1]
    after = [a for a in attempts if a[0] >= killed_at and a[1] == 1]
    assert len(before) > 20  # it had its share of the traffic before
    assert len([a for a in after if not a[2]]) <= 5 + 4  # the failures that eject it (+ races)
    probes = [a for a in after if a[2]]
    assert 1 <= len(probes) <= 3  # after 0.5 s, then 1 s, then 2 s
    (state,) = [e for e in snapshot(path) if e.get("target") == urls[1]]
    assert state["state"] in ("ejected", "half_open")
    assert sum(r[0] for r in results) > 200
    for child, _ in targets:
        child.kill()
        child.join(5)
