"""The tunnel stage: an upgrade handshake forwarded, and a 101 turned into a tunnel.

Runs after routing, authentication and admission, like any forwarding: a handshake is a
request. The edge (``gw.edge.tunnel``) relays the bytes once the 101 head is written; this
stage decides whether to ask the upstream at all, and hands over its connection.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from gw.core.exchange import Outcome
from gw.core.headers import response_headers
from gw.core.request import Request
from gw.edge.tunnel import Switch, Tunnel
from gw.errors import TunnelLimit, UpstreamBadResponse
from gw.tunnel.settings import TunnelSettings
from gw.upstream.client import UpstreamResponse

Forward = Callable[[dict[str, str]], UpstreamResponse]
Relay = Callable[[UpstreamResponse], Outcome]
Answer = Callable[[int, list[tuple[str, str]]], Outcome]


def asked(request: Request, allowed: frozenset[str]) -> str | None:
    """The protocol a GET asks to switch to, when ``allowed`` holds it; else None.

    APPSEC: only ``Connection: upgrade`` with one ``Upgrade`` protocol the route names is
    tunnelled; anything else is a plain request whose Upgrade field is dropped
    (``gw.core.headers.forwardable``), as on a route without ``upgrade:``.
    """
    if request.method != "GET":
        return None
    connection = request.headers.get("Connection") or ""
    if "upgrade" not in {token.strip().lower() for token in connection.split(",")}:
        return None
    protocol = (request.headers.get("Upgrade") or "").strip().lower()
    return protocol if protocol in allowed else None


class TunnelStage:
    """Open tunnels under the ``tunnels:`` limits; ``counted`` is told +1 and -1 (metrics)."""

    def __init__(
        self, settings: TunnelSettings, counted: Callable[[int], None] | None = None
    ) -> None:
        self.settings = settings
        self.counted = counted

    def serve(
        self,
        request: Request,
        allowed: frozenset[str],
        headers: Mapping[str, str],
        forward: Forward,
        relay: Relay,
        answer: Answer,
    ) -> Outcome | None:
        """Forward an upgrade handshake; None when the request is not one to tunnel.

        ``request.switch`` is the edge's (None: the server cannot relay, so nothing is
        tunnelled).
        A 101 is answered with the upstream's headers and offered to the edge; any other
        answer is relayed as usual.

        Raises:
            TunnelLimit: the worker's tunnels are all taken (before any upstream is asked).
            UpstreamBadResponse: the upstream switched to a protocol other than the one asked.
        """
        protocol = asked(request, allowed)
        switch = request.switch
        if protocol is None or not isinstance(switch, Switch):
            return None
        if not switch.reserve(self.settings.max_per_worker):
            cap = self.settings.max_per_worker
            raise TunnelLimit(f"this worker has {cap} tunnels open (tunnels.max_per_worker)")
        # APPSEC: Upgrade and Connection are hop-by-hop and dropped from every request; here,
        # on a route that allows the protocol, gw asks for the upgrade itself, naming only it.
        upstream = forward({**headers, "Connection": "Upgrade", "Upgrade": protocol})
        if upstream.status != 101:
            return relay(upstream)
        switch.offer(self._tunnel(upstream, protocol))
        return answer(101, response_headers(upstream.headers))

    def _tunnel(self, upstream: UpstreamResponse, protocol: str) -> Tunnel:
        said = next((v for n, v in upstream.headers if n.lower() == "upgrade"), "")
        if said.strip().lower() != protocol:
            # APPSEC: the client asked for this protocol and the route allows only it.
            upstream.abandon()
            raise UpstreamBadResponse(
                f"upstream {upstream.target} switched to {said[:40]!r}, not {protocol!r}"
            )
        sock, early = upstream.switched()
        counted = self.counted
        if counted is not None:
            counted(1)

        def close() -> None:
            upstream.abandon()  # APPSEC: a tunnel's connection is never pooled again
            if counted is not None:
                counted(-1)

        settings = self.settings
        return Tunnel(sock, protocol, settings.idle_timeout, settings.max_lifetime, close, early)
