"""Who the client is: the peer address, or what a trusted proxy in front says it is.

Pure module.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# NAT64's well-known prefix (RFC 6052): 64:ff9b::a.b.c.d is the IPv4 client a.b.c.d.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# No site owns a /64 in these: ::/64 holds ::1, :: and the IPv4-compatible and -mapped forms;
# a link-local /64 is every host on the link.
_NOT_A_SITE = (ipaddress.IPv6Network("::/64"), ipaddress.IPv6Network("fe80::/10"))


def parse_networks(entries: Sequence[str]) -> tuple[bool, tuple[IPNetwork, ...]]:
    """Parse a list of peers: CIDR networks, and ``unix`` for any peer on a unix socket.

    Host bits are allowed (``10.0.0.1/8`` is ``10.0.0.0/8``); a bare address is its /32 or /128.

    Returns:
        Whether ``unix`` is listed, and the networks.

    Raises:
        ValueError: an entry is neither ``unix`` nor an IP network.
    """
    networks = tuple(ipaddress.ip_network(e, strict=False) for e in entries if e != "unix")
    return "unix" in entries, networks


class PeerList:
    """Peers from a list (``parse_networks``), asked about one direct socket peer at a time.

    ``''`` is what gunicorn reports for a unix socket peer: in the list when ``unix`` is.
    """

    def __init__(self, entries: Sequence[str]) -> None:
        self._unix_socket, self._networks = parse_networks(entries)
        # PERF: the same few peers are asked about on every request.
        self.contains = lru_cache(maxsize=1024)(self._contains)

    def _contains(self, address: str) -> bool:
        if address == "":
            return self._unix_socket
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            # APPSEC: a dual-stack listener reports the IPv4 peer a.b.c.d as ::ffff:a.b.c.d;
            # it is the same host, so it is in the list when a.b.c.d (or its mapped form) is.
            mapped = ip.ipv4_mapped
            return any(ip in net or mapped in net for net in self._networks)
        return any(ip in net for net in self._networks)


class ClientInfo(NamedTuple):
    """Who the client is, as resolved from the socket peer and trusted proxies' headers.

    PERF: a named tuple, immutable as a frozen dataclass but made in a third of its time
    (one per request).
    """

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
        self.is_trusted = PeerList(entries).contains

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


@functools.lru_cache(maxsize=4096)  # PERF: parsed once per address, not per request
def client_key(address: str) -> str:
    """Return the part of a client address that names one client (for per-client limits).

    IPv4 addresses are kept whole, including when they arrive wrapped in IPv6 (IPv4-mapped
    ``::ffff:a.b.c.d`` from a dual-stack listener or a proxy, NAT64's ``64:ff9b::a.b.c.d``,
    Teredo's client address). Other IPv6 addresses are grouped by /64, the network one site
    usually owns, except where no site owns the /64: loopback (``::1``), the unspecified
    address, the deprecated IPv4-compatible ``::a.b.c.d`` (kept whole, not unwrapped: ``::1``
    is one of them) and link-local addresses are keyed whole (/128). What is not an address
    (``unix``, empty) is returned as it is.

    APPSEC: grouping decides whose budget a request spends. A group wider than one client
    lets a stranger spend it (every IPv4 client of a dual-stack listener and ``::1`` shared
    ``::/64``, so a never-seen client's first request got 429); a group narrower than one
    client lets it rotate addresses to escape its limit (one site holds a whole /64).
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip)
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        return str(embedded)
    if any(ip in network for network in _NOT_A_SITE):
        return str(ip)
    return str(ipaddress.IPv6Network((ip, 64), strict=False).network_address) + "/64"


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 client an IPv6 address stands for (mapped, NAT64, Teredo), else None."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.teredo[1] if ip.teredo is not None else None
