"""Send raw bytes on one connection and read back every answer, bounded in time.

Unlike ``tests.support.rawhttp`` this reads several pipelined answers from one connection and
stops as soon as it has what it waits for, so that a connection the server keeps open costs a
short grace period, not a keep-alive timeout.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

GRACE = 0.25  # seconds to wait for more bytes once the expected answers are in


@dataclass
class Answer:
    """One response read from the client connection."""

    status: int
    headers: list[tuple[str, str]]  # names lower case
    body: bytes
    complete: bool = True

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n == name.lower()]
        return values[0] if values else None


@dataclass
class Exchange:
    """What came back on a connection: the answers, the raw bytes, how the connection ended."""

    answers: list[Answer] = field(default_factory=list)
    raw: bytes = b""
    closed: bool = False  # the server closed (EOF or reset) before the read gave up
    garbage: bytes = b""  # bytes that did not parse as a response

    @property
    def statuses(self) -> list[int]:
        return [a.status for a in self.answers]


def exchange(
    port: int,
    data: bytes,
    *,
    expect: int = 1,
    half_close: bool = True,
    timeout: float = 6.0,
    host: str = "127.0.0.1",
) -> Exchange:
    """Send ``data``, then read until EOF, or ``expect`` answers and a quiet ``GRACE``.

    ``half_close`` ends the client's sending side after ``data`` (the server sees EOF as soon
    as it has read everything): a server waiting for more bytes gives up at once. Proxies that
    treat a half-close as an abort (nginx does) need ``half_close=False``.
    """
    result = Exchange()
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may close early, having refused what it read so far
        buffer = b""
        while time.monotonic() < deadline:
            have = len(parse_answers(buffer)[0])
            wait = GRACE if have >= expect else deadline - time.monotonic()
            sock.settimeout(max(0.01, min(wait, deadline - time.monotonic())))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                if have >= expect:
                    break
                continue
            except OSError:
                result.closed = True
                break
            if not chunk:
                result.closed = True
                break
            buffer += chunk
    result.raw = buffer
    result.answers, result.garbage = parse_answers(buffer, eof=result.closed)
    return result


def parse_answers(data: bytes, eof: bool = False) -> tuple[list[Answer], bytes]:
    """Parse consecutive responses (1xx skipped); return them and the unparsed rest."""
    answers: list[Answer] = []
    while data:
        parsed = _parse_one(data, eof)
        if parsed is None:
            break
        answer, data = parsed
        if answer.status >= 200:
            answers.append(answer)
    return answers, data


def _parse_one(data: bytes, eof: bool) -> tuple[Answer, bytes] | None:
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/1."):
        return None
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ")[1])
    except (IndexError, ValueError):
        return None
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    names = dict(headers)
    if status < 200 or status in (204, 304):
        return Answer(status, headers, b""), rest
    if "chunked" in names.get("transfer-encoding", "").lower():
        return _dechunk(status, headers, rest, eof)
    if "content-length" in names:
        length = int(names["content-length"])
        if len(rest) < length:
            return (Answer(status, headers, rest, complete=False), b"") if eof else None
        return Answer(status, headers, rest[:length]), rest[length:]
    if not eof:
        return None
    return Answer(status, headers, rest), b""


def _dechunk(
    status: int, headers: list[tuple[str, str]], rest: bytes, eof: bool
) -> tuple[Answer, bytes] | None:
    body = b""
    while True:
        line, sep, after = rest.partition(b"\r\n")
        try:
            size = int(line.split(b";")[0], 16) if sep else -1
        except ValueError:
            size = -1
        if size < 0 or len(after) < size + 2:
            return (Answer(status, headers, body, complete=False), b"") if eof else None
        if size == 0:
            _, sep, after = after.partition(b"\r\n")  # no trailers from the servers tested here
            return Answer(status, headers, body), after
        body += after[:size]
        rest = after[size + 2 :]
