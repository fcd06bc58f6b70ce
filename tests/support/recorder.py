"""A recording upstream that reads what the gateway sends with h11, a strict reference parser.

Every upstream connection keeps the raw bytes it received; every request h11 reads from them is
recorded (method, target, header section, body, trailers, connection, arrival order) and
answered with ``200`` and a body that names the request (``X-Upstream-Seq``), so that a client
can tell which upstream request produced the answer it got. When h11 cannot read the bytes the
gateway sent, the connection records the error (a framing disagreement: the gateway sent
something a strict parser refuses) and is closed.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
import time
from dataclasses import dataclass, field

import h11

# A request hidden in another one by a smuggling payload targets /smuggled/...: it is recorded
# (that is the finding) and the connection is closed without an answer, so that its answer can
# never sit in the gateway's pool and become the answer to a later, unrelated test's request.
# (Whether gw checks a pooled connection for such late bytes is the malicious-upstream suite's
# question, not this recorder's.)
HANG_UP_ON = "/smuggled/"
READ_TIMEOUT = 30.0  # seconds an idle upstream connection is kept (the gateway's pool closes it)


@dataclass(frozen=True)
class Recorded:
    """One request h11 read from an upstream connection."""

    seq: int
    connection: int
    method: str
    target: str
    headers: tuple[tuple[str, str], ...]  # names lower case, values latin-1, in order
    body: bytes
    trailers: tuple[tuple[str, str], ...]
    http_version: str

    def values(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name.lower()]

    def header(self, name: str) -> str | None:
        values = self.values(name)
        return ",".join(values) if values else None


@dataclass(frozen=True)
class Mark:
    requests: int
    time: float


@dataclass
class ConnectionLog:
    """The raw bytes of one upstream connection and how h11 read them."""

    number: int
    raw: bytearray = field(default_factory=bytearray)
    error: str | None = None  # h11's complaint, when it could not read the gateway's bytes
    aborted: bool = False  # the gateway closed it inside a message (an abandoned request)
    closed: bool = False
    eof: bool = False
    midway: bool = False  # h11 holds part of a request: a head without its whole body
    last_data: float = 0.0  # time.monotonic() of the last bytes received


@dataclass(repr=False)
class Recorder:
    """The upstream server: its port, what it recorded, and a lock guarding both lists."""

    sock: socket.socket
    requests: list[Recorded] = field(default_factory=list)
    connections: list[ConnectionLog] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def __repr__(self) -> str:
        return f"Recorder(port={self.port}, requests={len(self.requests)})"

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def mark(self) -> Mark:
        """Return a position to ask ``since`` and ``midway`` about later."""
        with self.lock:
            return Mark(len(self.requests), time.monotonic())

    def since(self, mark: Mark) -> list[Recorded]:
        with self.lock:
            return list(self.requests[mark.requests :])

    def midway(self, mark: Mark, wait: float = 1.0) -> list[tuple[int, bytes]]:
        """Open connections that got bytes since ``mark`` and hold part of a request.

        A gateway that leaves a request head (or part of a body) on a connection it keeps
        makes the next request on that connection the rest of the message. Waits up to
        ``wait`` seconds for such connections to be closed (an abandoned request is fine).
        """
        deadline = time.monotonic() + wait
        while True:
            with self.lock:
                found = [
                    (c.number, bytes(c.raw[-300:]))
                    for c in self.connections
                    if c.midway and not c.closed and c.last_data >= mark.time
                ]
            if not found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def errors(self) -> list[tuple[int, str, bytes]]:
        """Every connection h11 could not read: (connection, error, raw bytes)."""
        with self.lock:
            return [(c.number, c.error, bytes(c.raw)) for c in self.connections if c.error]

    def settle(self, mark: Mark, quiet: float = 0.05, timeout: float = 3.0) -> None:
        """Wait until no request has arrived since ``mark`` for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        count, changed = len(self.since(mark)), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.01)
            now = len(self.since(mark))
            if now != count:
                count, changed = now, time.monotonic()
            elif time.monotonic() - changed >= quiet:
                return

    def close(self) -> None:
        self.stopping.set()
        self.sock.close()


def start_recorder() -> Recorder:
    """Start the recording upstream on an ephemeral loopback port."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    recorder = Recorder(sock)
    threading.Thread(target=_accept_loop, args=(recorder,), daemon=True).start()
    return recorder


def _accept_loop(recorder: Recorder) -> None:
    numbers = itertools.count(1)
    while not recorder.stopping.is_set():
        try:
            conn, _ = recorder.sock.accept()
        except OSError:
            return
        log = ConnectionLog(next(numbers))
        with recorder.lock:
            recorder.connections.append(log)
        threading.Thread(target=_serve, args=(recorder, conn, log), daemon=True).start()


def _serve(recorder: Recorder, conn: socket.socket, log: ConnectionLog) -> None:
    conn.settimeout(READ_TIMEOUT)
    parser = h11.Connection(h11.SERVER)
    try:
        while _serve_one(recorder, conn, parser, log):
            parser.start_next_cycle()
    except (h11.RemoteProtocolError, h11.LocalProtocolError) as ex:
        if log.eof:
            log.aborted = True  # cut off mid-message: abandoned, not misframed
            return
        log.error = f"{type(ex).__name__}: {ex}"
        _send_quietly(conn, b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    except OSError:
        pass
    finally:
        log.closed = True
        conn.close()


def _serve_one(
    recorder: Recorder, conn: socket.socket, parser: h11.Connection, log: ConnectionLog
) -> bool:
    """Read one request, record it, answer it; return whether the connection goes on."""
    request: h11.Request | None = None
    body = bytearray()
    while True:
        event = parser.next_event()
        if event is h11.NEED_DATA:
            log.midway = parser.their_state is not h11.IDLE or bool(parser.trailing_data[0])
            data = conn.recv(65536)
            with recorder.lock:
                log.raw += data
                log.eof = not data
                log.last_data = time.monotonic()
            parser.receive_data(data)  # b"" tells h11 the connection ended
            continue
        if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return False
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert request is not None
            record = _record(recorder, log, request, bytes(body), event.headers)
            if HANG_UP_ON in record.target:
                return False  # recorded; left unanswered (see HANG_UP_ON)
            _answer(conn, parser, record)
            return parser.our_state is h11.DONE and parser.their_state is h11.DONE


def _record(
    recorder: Recorder, log: ConnectionLog, request: h11.Request, body: bytes, trailers: object
) -> Recorded:
    def pairs(headers: object) -> tuple[tuple[str, str], ...]:
        raw = headers.raw_items()  # type: ignore[attr-defined]
        return tuple((n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in raw)

    with recorder.lock:
        record = Recorded(
            seq=next(recorder._seq),
            connection=log.number,
            method=request.method.decode("latin-1"),
            target=request.target.decode("latin-1"),
            headers=pairs(request.headers),
            body=body,
            trailers=pairs(trailers),
            http_version=request.http_version.decode("latin-1"),
        )
        recorder.requests.append(record)
    return record


def _answer(conn: socket.socket, parser: h11.Connection, record: Recorded) -> None:
    # A CONNECT answered 2xx would switch the connection to a tunnel: refuse it instead.
    status = 405 if record.method == "CONNECT" else 200
    body = f"upstream #{record.seq}: {record.method} {record.target}\n".encode("latin-1")
    headers = [
        ("Content-Type", "text/plain"),
        ("Content-Length", str(len(body))),
        ("X-Upstream-Seq", str(record.seq)),
    ]
    data = parser.send(h11.Response(status_code=status, headers=headers))
    data = (data or b"") + (parser.send(h11.Data(data=body)) or b"")
    data += parser.send(h11.EndOfMessage()) or b""
    conn.sendall(data)


def _send_quietly(conn: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):
        conn.sendall(data)
