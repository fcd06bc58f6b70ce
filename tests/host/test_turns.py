"""Connections of one gevent worker take turns: one whose requests never wait does not keep
the worker while another's requests are ready (``gw.edge.worker.Turns``).

Two client connections each have 20 requests pipelined, so neither connection ever waits for
a read: only the turns can let the other one in. Each is served by gw's edge
(``gw.edge.connection``) in its own greenlet, as the gevent worker serves them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

# Run in a child: the test process itself is not patched by gevent.
CONNECTIONS = textwrap.dedent(
    """
    from gevent import monkey
    monkey.patch_all()
    import json, socket, sys
    import gevent
    from gunicorn.config import Config
    from gunicorn.http.wsgi import base_environ
    from gw.edge.connection import Connection
    from gw.edge.request import Limits
    from gw.edge.worker import Turns, write_json_error

    answered = []

    def app(environ, start_response):
        answered.append(environ["HTTP_X_CLIENT"])
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    def serve(sock):
        connection = Connection(
            sock, ("127.0.0.1", 1), ("127.0.0.1", 2), app, Limits(requests=1000),
            base_environ(Config()), write_json_error, lambda: True, lambda: True,
            Turns().take,
        )
        connection.serve()

    clients = []
    for name in ("a", "b"):
        ours, theirs = socket.socketpair()
        head = f"GET / HTTP/1.1\\r\\nHost: x\\r\\nX-Client: {name}\\r\\n\\r\\n".encode()
        theirs.sendall(head * 20)  # pipelined: the connection never waits to read one
        theirs.shutdown(socket.SHUT_WR)
        clients.append((ours, theirs))
    gevent.joinall([gevent.spawn(serve, ours) for ours, _ in clients], timeout=10)
    print(json.dumps(answered), flush=True)
    """
)


def longest_run(answered: list[str]) -> int:
    """The most requests of one connection answered in a row."""
    longest = run = 0
    for i, who in enumerate(answered):
        run = run + 1 if i and answered[i - 1] == who else 1
        longest = max(longest, run)
    return longest


def test_a_connection_that_never_waits_takes_turns_with_the_others() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CONNECTIONS], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    answered = json.loads(done.stdout)
    assert sorted(answered) == ["a"] * 20 + ["b"] * 20
    # Without turns: all 20 of the first connection, then all 20 of the other.
    assert longest_run(answered) <= 2, answered
