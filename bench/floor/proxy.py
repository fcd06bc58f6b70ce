"""The floor of gw's shape on this machine: a minimal reverse proxy on gevent and llhttp.

What gw's concurrency model costs with nothing else: pre-forked worker processes sharing one
listener, a greenlet per client connection, llhttp (httptools) parsing both directions, and
the header work any gateway does (hop-by-hop headers dropped, ``X-Forwarded-For`` and
``X-Request-Id`` added, the answer framed with ``Content-Length``). Each client connection
keeps one upstream connection of its own. With ``--falcon`` every request also goes through a
Falcon app (one sink, as gw's proxy sink), called the WSGI way: that row prices the shape the
user fixed (WSGI, Falcon) on top of the floor.

Not a gateway: GET only (no request bodies, no HEAD), no limits, no timeouts, no errors in JSON. It
exists for ``bench/run.py``'s ``floor`` and ``floor-falcon`` rows, so that every run shows how
far gw is from the cheapest Python proxy of its shape, in the same run.

    python bench/floor/proxy.py --port 8080 --upstream 127.0.0.1:9000 --workers 2 [--falcon]
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable, Iterable  # noqa: E402
from typing import Any  # noqa: E402

import httptools  # noqa: E402
from gevent.server import StreamServer  # noqa: E402

HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade"}
    | {b"transfer-encoding", b"content-length", b"host"}  # framed and addressed by the proxy
)
Exchange = Callable[[bytes, bytes, list[tuple[bytes, bytes]], str], tuple[int, list, bytes]]


class Message:
    """One parsed message: what llhttp's callbacks collected."""

    __slots__ = ("body", "complete", "headers", "method", "url")

    def __init__(self) -> None:
        self.method = b""
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


class Requests:
    """The llhttp request parser's callbacks: completed requests, in order."""

    def __init__(self) -> None:
        self.current = Message()
        self.done: list[Message] = []
        self.parser = httptools.HttpRequestParser(self)

    def on_message_begin(self) -> None:
        self.current = Message()

    def on_url(self, url: bytes) -> None:
        self.current.on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.on_header(name, value)

    def on_headers_complete(self) -> None:
        self.current.method = self.parser.get_method()

    def on_message_complete(self) -> None:
        self.done.append(self.current)


def upstream_exchange(upstream: socket.socket) -> Exchange:
    """Return a function that sends one request on ``upstream`` and reads its answer."""

    def exchange(
        method: bytes, url: bytes, headers: list[tuple[bytes, bytes]], client: str
    ) -> tuple[int, list, bytes]:
        head = [b"%s %s HTTP/1.1\r\nHost: upstream\r\n" % (method, url)]
        head += [b"%s: %s\r\n" % (n, v) for n, v in headers if n.lower() not in HOP_BY_HOP]
        head.append(b"X-Forwarded-For: %s\r\n" % client.encode())
        head.append(b"X-Request-Id: %032x\r\n\r\n" % random.getrandbits(128))
        upstream.sendall(b"".join(head))
        answer = Message()
        parser = httptools.HttpResponseParser(answer)
        while not answer.complete:
            data = upstream.recv(65536)
            if not data:
                raise ConnectionError("the upstream closed the connection")
            parser.feed_data(data)
        kept = [(n, v) for n, v in answer.headers if n.lower() not in HOP_BY_HOP]
        return parser.get_status_code(), kept, answer.body

    return exchange


def falcon_exchange(upstream: socket.socket) -> Exchange:
    """The same exchange, with every request passed through a Falcon app (one sink)."""
    import falcon

    forward = upstream_exchange(upstream)

    def sink(req: Any, resp: Any) -> None:
        env = req.env
        status, headers, body = forward(
            env["REQUEST_METHOD"].encode(),
            env["RAW_URI"].encode(),
            env["gw.headers"],
            env["REMOTE_ADDR"],
        )
        resp.status = status
        for name, value in headers:
            resp.append_header(name.decode("latin-1"), value.decode("latin-1"))
        resp.data = body

    app = falcon.App()
    app.add_sink(sink, "/")

    def exchange(
        method: bytes, url: bytes, headers: list[tuple[bytes, bytes]], client: str
    ) -> tuple[int, list, bytes]:
        environ = {
            "REQUEST_METHOD": method.decode(),
            "RAW_URI": url.decode("latin-1"),
            "PATH_INFO": url.partition(b"?")[0].decode("latin-1"),
            "QUERY_STRING": url.partition(b"?")[2].decode("latin-1"),
            "SERVER_PROTOCOL": "HTTP/1.1",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80",
            "REMOTE_ADDR": client,
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(),
            "wsgi.errors": sys.stderr,
            "wsgi.version": (1, 0),
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "gw.headers": headers,
        }
        for name, value in headers:
            environ["HTTP_" + name.decode("latin-1").upper().replace("-", "_")] = value.decode(
                "latin-1"
            )
        started: list[Any] = []
        chunks = app(
            environ, lambda status, headers, exc_info=None: started.extend((status, headers))
        )
        body = b"".join(chunks)
        kept = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in started[1]]
        kept = [(n, v) for n, v in kept if n.lower() not in HOP_BY_HOP]
        return int(started[0][:3]), kept, body

    return exchange


def serve(make_exchange: Callable[[socket.socket], Exchange], upstream: tuple[str, int]) -> Any:
    """Return the per-connection handler for ``StreamServer``."""

    def handle(client: socket.socket, address: Any) -> None:
        with contextlib.suppress(ConnectionError), socket.create_connection(upstream) as conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            exchange = make_exchange(conn)
            requests = Requests()
            while True:
                data = client.recv(65536)
                if not data:
                    return
                requests.parser.feed_data(data)
                for message in requests.done:
                    method = message.method
                    status, headers, body = exchange(
                        method, message.url, message.headers, address[0]
                    )
                    head = [b"HTTP/1.1 %d %s\r\n" % (status, b"OK" if status == 200 else b"-")]
                    head += [b"%s: %s\r\n" % pair for pair in headers]
                    head.append(b"Content-Length: %d\r\n\r\n" % len(body))
                    client.sendall(b"".join(head) + body)
                requests.done.clear()

    return handle


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="HOST:PORT")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--falcon", action="store_true", help="pass every request through Falcon")
    args = parser.parse_args(list(argv) if argv is not None else None)
    host, _, port = args.upstream.rpartition(":")
    listener = socket.create_server(("127.0.0.1", args.port), backlog=4096)
    make = falcon_exchange if args.falcon else upstream_exchange
    children = []
    for _ in range(args.workers):
        pid = os.fork()
        if pid == 0:
            from gevent import hub

            hub.reinit()
            StreamServer(listener, serve(make, (host, int(port)))).serve_forever()
            os._exit(0)
        children.append(pid)

    def stop(*_: Any) -> None:
        for child in children:
            os.kill(child, signal.SIGTERM)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for child in children:
        os.waitpid(child, 0)


if __name__ == "__main__":
    main()
