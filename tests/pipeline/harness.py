"""Drive ``Gateway.handle`` in process: a WSGI environ in, what the client would read out."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from gw.config.load import parse_config
from gw.pipeline import Gateway
from tests.support.fake_transport import FakeTransport


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n.lower() == name.lower()), None)

    def json(self) -> Any:
        return json.loads(self.body)


class InProcessGateway:
    """A ``Gateway`` built from a config dict whose upstreams are a ``FakeTransport``."""

    def __init__(self, config: dict[str, Any], transport: FakeTransport) -> None:
        config = {"metrics": {"enabled": False}, **config}
        self.gateway = Gateway(parse_config(config, environ={}), connect=transport.connect)

    def request(
        self,
        method: str,
        target: str,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        peer: str = "127.0.0.1",
    ) -> Answer:
        environ = build_environ(method, target, headers or {}, body, peer)
        outcome = self.gateway.handle(environ)
        chunks: Iterator[bytes] = iter(outcome.body)
        try:
            data = b"".join(chunks)
        finally:
            close = getattr(outcome.body, "close", None)
            if close is not None:
                close()
        return Answer(outcome.status, list(outcome.headers), data)


def build_environ(
    method: str, target: str, headers: dict[str, str], body: bytes, peer: str
) -> dict[str, Any]:
    path, _, query = target.partition("?")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "RAW_URI": target,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": "gw.test",
        "SERVER_PORT": "8080",
        "REMOTE_ADDR": peer,
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "HTTP_HOST": "gw.test",
    }
    if body:
        environ["CONTENT_LENGTH"] = str(len(body))
    for name, value in headers.items():
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            environ[key] = value
        else:
            environ[f"HTTP_{key}"] = value
    return environ
