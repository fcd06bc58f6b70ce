"""One request as the gateway sees it: built once at ingress, read by every stage after.

Pure module. Nothing past ingress reads the WSGI environ: the method, the canonical path, the
raw query, the effective host, the headers, who the client is and the body stream are all
here. ``exchange`` is the record the access log and the metrics write; ``identity`` is set
once authentication has verified the caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO

from gw.core.exchange import Exchange
from gw.core.forwarding import ClientInfo
from gw.core.headers import Headers
from gw.core.hosts import Authority
from gw.core.identity import Identity


@dataclass(slots=True, eq=False)
class Request:
    """What the client asked for, and who asked (see the module docstring).

    ``method``, ``request_id`` and ``client`` are the exchange's, and ``host`` the
    authority's, copied at ingress (PERF: a field read, where a property was a call; the
    stages read them several times a request).
    """

    exchange: Exchange
    method: str
    request_id: str
    client: ClientInfo  # resolved at ingress, before the Request exists
    host: str | None  # the effective host as received (port included), or None
    headers: Headers
    path: str  # canonical (gw.core.paths): the one path routing and every stage use
    query: str  # as received, byte for byte
    authority: Authority | None  # the effective host (gw.core.hosts); None for HTTP/1.0
    protocol: str  # the request's HTTP version, e.g. "HTTP/1.1"
    peer: str  # the direct socket peer (never a forwarded address)
    port: str | None  # the listener's port
    body: IO[bytes]
    identity: Identity | None = None
    # The edge's handle on an upgrade request (gw.edge.tunnel.Switch), None where the server
    # cannot relay a switched protocol. Opaque here: only the tunnel stage uses it.
    switch: object | None = None
    params: Mapping[str, str] = field(default_factory=dict)  # the route's captured segments
