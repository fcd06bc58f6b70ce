"""gw.core.ingress: the one Request, every field from the part of the environ it names."""

from __future__ import annotations

import io

from gw.core.forwarding import TrustedProxies
from gw.core.headers import GATEWAY_OWNED
from gw.core.ingress import SWITCH, exchange_from, request_from


def test_every_field_of_the_request_comes_from_its_own_part_of_the_environ() -> None:
    body, switch = io.BytesIO(b"x"), object()
    environ = {
        "REQUEST_METHOD": "PATCH",
        "RAW_URI": "/a/%7Eb?q=1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_PORT": "8443",
        "REMOTE_ADDR": "192.0.2.7",
        "wsgi.url_scheme": "https",
        "wsgi.input": body,
        "HTTP_HOST": "api.example:8443",
        "HTTP_X_REQUEST_ID": "client-id-0001",
        "HTTP_ACCEPT": "text/plain",
        SWITCH: switch,
    }
    exchange = exchange_from(environ, TrustedProxies([]))
    request = request_from(exchange, environ, GATEWAY_OWNED)
    assert (exchange.request_id, exchange.method, exchange.raw_target) == (
        "client-id-0001",
        "PATCH",
        "/a/%7Eb?q=1",
    )
    assert request.exchange is exchange
    assert (request.method, request.request_id) == ("PATCH", "client-id-0001")
    assert request.client.ip == "192.0.2.7"
    assert request.host == "api.example:8443"
    assert request.headers.get("accept") == "text/plain"
    assert (request.path, request.query) == ("/a/~b", "q=1")
    assert request.authority is exchange.authority
    assert request.authority is not None and request.authority.name == "api.example"
    assert (request.protocol, request.peer, request.port) == ("HTTP/1.1", "192.0.2.7", "8443")
    assert request.body is body
    assert request.identity is None
    assert request.switch is switch
    assert request.params == {}
