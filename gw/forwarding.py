"""Who the client is: the peer address, or what a trusted proxy in front says it is.

Pure module.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class ClientInfo:
    ip: str
    proto: str
    forwarded_for: str
    peer_trusted: bool


class TrustedProxies:
    """Resolve the client address from ``REMOTE_ADDR`` and ``X-Forwarded-For``.

    Warning:
        ``X-Forwarded-For`` is only believed when the direct peer is a configured proxy, and
        then only up to the right-most hop that is not itself a trusted proxy. Anything left
        of that hop was written by the client and proves nothing.
    """

    def __init__(self, entries: Sequence[str]) -> None:
        self._unix = "unix" in entries
        self._networks: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(e, strict=False) for e in entries if e != "unix"
        )
        # PERF: the same few proxy addresses are asked about on every request.
        self.is_trusted = lru_cache(maxsize=1024)(self._is_trusted)

    def _is_trusted(self, address: str) -> bool:
        if address == "":
            return self._unix
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._networks)

    def resolve(
        self, remote_addr: str, xff: str | None, xfp: str | None, scheme: str
    ) -> ClientInfo:
        """Return the client's address, the scheme it used and the X-Forwarded-For to send on."""
        if not self.is_trusted(remote_addr):
            # APPSEC: an untrusted peer's X-Forwarded-* headers are dropped, not extended.
            return ClientInfo(remote_addr, scheme, remote_addr, False)
        hops = [h.strip() for h in xff.split(",")] if xff else []
        client = remote_addr or "unix"
        for hop in reversed(hops):
            client = hop
            if not self.is_trusted(hop):
                break
        chain = ", ".join([*hops, remote_addr]) if remote_addr else ", ".join(hops)
        proto = xfp.split(",")[-1].strip().lower() if xfp else scheme
        if proto not in ("http", "https"):
            proto = scheme
        return ClientInfo(client, proto, chain or client, True)
