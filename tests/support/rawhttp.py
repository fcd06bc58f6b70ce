"""Send requests byte for byte (no client-side normalization) and read raw answers."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    complete: bool

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)


def raw_request(port: int, request: bytes, timeout: float = 10.0) -> RawResponse:
    """Send ``request`` exactly as given on a fresh connection and read the answer to EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = read_to_eof(sock)
    return parse_response(data)


def read_to_eof(sock: socket.socket) -> bytes:
    """Read until the peer closes (or resets, or stays silent for the socket's timeout)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        data += chunk
    return data


def get(
    port: int, target: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> RawResponse:
    lines = [f"{method} {target} HTTP/1.1", "Host: gw.test", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return raw_request(port, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))


def parse_response(data: bytes) -> RawResponse:
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = [tuple(line.split(": ", 1)) for line in lines[1:] if ": " in line]
    pairs = [(n, v) for n, v in headers]
    body, complete = _body(rest, pairs)
    return RawResponse(status, pairs, body, complete)


def _body(rest: bytes, headers: list[tuple[str, str]]) -> tuple[bytes, bool]:
    names = {n.lower(): v for n, v in headers}
    if "chunked" in names.get("transfer-encoding", "").lower():
        out = b""
        while True:
            line, sep, rest = rest.partition(b"\r\n")
            if not sep:
                return out, False
            size = int(line.split(b";")[0] or b"0", 16)
            if size == 0:
                return out, True
            if len(rest) < size + 2:
                return out + rest[:size], False
            out += rest[:size]
            rest = rest[size + 2 :]
    if "content-length" in names:
        length = int(names["content-length"])
        return rest[:length], len(rest) >= length
    return rest, True
