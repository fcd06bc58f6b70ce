"""What one wait costs in a gevent worker: for bytes (gevent's ``recv``, gw's ``receive``), or
for a due timer (a connection's turn, ``gw.edge.worker.Turns``).

Two greenlets play ping-pong over a gevent socketpair: each ``--waits`` round, one sends a
byte and reads the answer, the other reads it and sends it back, so every read waits once.
The kinds:
- ``no-timeout``: gevent's ``recv`` on sockets without a timeout (no timer at all);
- ``gevent``: gevent's ``recv`` with a 30 s timeout, as gw's sockets have (a
  ``gevent.Timeout`` per wait);
- ``receive``: ``gw.host.process.receive`` with the same timeout (a bare loop timer per wait).

And two greenlets that each pause ``--waits`` / 2 times, in turn:
- ``sleep``: ``gevent.sleep(0.000001)`` (a new timer each pause);
- ``kept-timer``: a timer each greenlet keeps, started for each pause (``Turns.take``).

    .venv/bin/python bench/wait_cost.py              # CPU µs per wait, each kind
    .venv/bin/python bench/wait_cost.py --callgrind  # instructions per wait (repeatable)

A wait here includes the send that ends it and two greenlet switches through the hub.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import gevent
import gevent.socket

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from proxybench.callgrind import instructions  # noqa: E402

from gw.host.process import receive  # noqa: E402 (after the path)

KINDS = ("no-timeout", "gevent", "receive", "sleep", "kept-timer")
PAUSES = ("sleep", "kept-timer")


def _read(kind: str) -> Callable[[gevent.socket.socket, int], bytes]:
    if kind == "receive":
        return receive
    return lambda sock, size: sock.recv(size)


def pauses(kind: str, rounds: int) -> float:
    """Pause two greenlets ``rounds`` times each; return the CPU seconds it took."""
    hub = gevent.get_hub()
    loop = hub.loop

    def pausing() -> None:
        if kind == "sleep":
            for _ in range(rounds):
                gevent.sleep(0.000001)
            return
        timer = loop.timer(0.000001)
        for _ in range(rounds):
            loop.update_now()
            hub.wait(timer)

    started = time.process_time()
    gevent.joinall([gevent.spawn(pausing), gevent.spawn(pausing)])
    return time.process_time() - started


def ping_pong(kind: str, rounds: int) -> float:
    """Play ``rounds`` rounds (2 waits each); return the CPU seconds they took."""
    read = _read(kind)
    left, right = gevent.socket.socketpair()
    timeout = None if kind == "no-timeout" else 30.0
    left.settimeout(timeout)
    right.settimeout(timeout)

    def echo() -> None:
        for _ in range(rounds):
            right.send(read(right, 16))

    echoing = gevent.spawn(echo)
    gevent.sleep(0)
    started = time.process_time()
    for _ in range(rounds):
        left.send(b"x")
        read(left, 16)
    took = time.process_time() - started
    echoing.join()
    left.close()
    right.close()
    return took


def callgrind(kind: str, rounds: int) -> int:
    """Instructions of a whole run of ``rounds`` rounds (start-up included)."""
    return instructions([sys.executable, __file__, "--kind", kind, "--waits", str(2 * rounds)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waits", type=int, default=100_000)
    parser.add_argument("--kind", choices=KINDS, help="one kind, in this process")
    parser.add_argument("--callgrind", action="store_true", help="instructions per wait")
    args = parser.parse_args()
    rounds = args.waits // 2
    if args.kind:
        (pauses if args.kind in PAUSES else ping_pong)(args.kind, rounds)
        return
    for kind in KINDS:
        if args.callgrind:
            # Two run lengths: their difference leaves out the interpreter's start.
            few, many = 500, 1500
            per_wait = (callgrind(kind, many) - callgrind(kind, few)) / (2 * (many - few))
            print(f"{kind}: {per_wait / 1000:.1f}k instructions per wait")
        else:
            took = (pauses if kind in PAUSES else ping_pong)(kind, rounds)
            print(f"{kind}: {took / (2 * rounds) * 1e6:.2f} CPU µs per wait")


if __name__ == "__main__":
    main()
