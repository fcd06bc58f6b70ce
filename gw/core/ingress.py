"""Ingress: a WSGI environ becomes an ``Exchange`` (the log record) and the one ``Request``.

Pure module. The only code of gw that reads the environ; every stage after reads the
``Request``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from gw.core.exchange import Exchange
from gw.core.forwarding import TrustedProxies
from gw.core.headers import Headers, check_connection, request_id
from gw.core.hosts import effective_host
from gw.core.paths import canonicalize, split_target
from gw.core.request import Request
from gw.errors import InvalidQuery


def exchange_from(environ: Mapping[str, Any], proxies: TrustedProxies) -> Exchange:
    """Mint or honour the request id, start the clock, resolve who the client is."""
    raw_target = environ.get("RAW_URI") or environ.get("REQUEST_URI") or _rebuild(environ)
    # PERF: positional (request id, method, raw target): keywords cost more, once a request.
    exchange = Exchange(
        request_id(environ.get("HTTP_X_REQUEST_ID")), environ["REQUEST_METHOD"], raw_target
    )
    exchange.client = proxies.resolve(
        environ.get("REMOTE_ADDR") or "",
        environ.get("HTTP_X_FORWARDED_FOR"),
        environ.get("HTTP_X_FORWARDED_PROTO"),
        environ.get("wsgi.url_scheme", "http"),
    )
    return exchange


SWITCH = "gw.edge.switch"  # the environ key of the edge's handle on an upgrade request
# The environ key of the client's ``Headers``, which gw's edge reads as it makes the environ
# (other servers: absent, and the environ's keys are read).
HEADERS = "gw.edge.headers"


def request_from(exchange: Exchange, environ: Mapping[str, Any], owned: frozenset[str]) -> Request:
    """Build the one ``Request``: decode and canonicalize the path once, one effective
    host (400 if Host is missing, repeated or invalid), and no Connection header that
    names a framing or gateway-owned header (400)."""
    raw_path, query = split_target(exchange.raw_target)
    # APPSEC: the query passes byte for byte, so it must be a legal request-target
    # query; anything else could be read differently by the upstream.
    if query and not (
        query.isascii() and query.isprintable() and " " not in query and "#" not in query
    ):
        raise InvalidQuery("the query string has characters that must be percent-encoded")
    exchange.path = canonicalize(raw_path)
    exchange.query = query
    protocol = environ.get("SERVER_PROTOCOL", "")
    exchange.authority = effective_host(exchange.raw_target, environ.get("HTTP_HOST"), protocol)
    headers = environ.get(HEADERS) or Headers.from_environ(environ)
    connection = headers.by_name.get("connection")
    if connection:  # PERF: no call for the usual request, which has none
        check_connection(connection, owned)
    client = exchange.client
    assert client is not None  # resolved by exchange_from
    authority = exchange.authority
    # PERF: the fields in their order, not by keyword (which cost twice as much: 4k
    # instructions a request); tests/unit/test_ingress.py checks each one.
    return Request(
        exchange,
        exchange.method,
        exchange.request_id,
        client,
        authority.host if authority else None,  # host
        headers,
        exchange.path,
        query,
        authority,
        protocol,
        environ.get("REMOTE_ADDR") or "",  # peer
        environ.get("SERVER_PORT"),  # port
        environ["wsgi.input"],  # body
        None,  # identity: authentication sets it
        environ.get(SWITCH),  # switch
    )


def _rebuild(environ: Mapping[str, Any]) -> str:
    """Servers without a raw target: best effort from the decoded PATH_INFO.

    Warning:
        Without RAW_URI an encoded ``/`` cannot be told from a real one; gunicorn provides
        RAW_URI, which is what gw is deployed with.
    """
    path = quote(
        environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "/"), safe="/!$&'()*+,;=:@"
    )
    query = environ.get("QUERY_STRING")
    return f"{path}?{query}" if query else path
