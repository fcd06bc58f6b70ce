"""Per-route address guards: ``allow_from`` / ``deny_from`` CIDR lists (Kong's ip-restriction,
nginx's ``allow``/``deny``).

Pure module (its list type is in ``gw.guards.settings``). Compiled once per route; checked
right after routing, before CORS, authentication and rate limits, so a refused address costs
no token verification and spends no one's rate limit.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache

from gw.core.forwarding import PeerList
from gw.errors import IpForbidden


class AddressRule:
    """A route's allow and deny lists, asked about one client address at a time.

    A denied address is refused even when an allow list also holds it (deny wins); with an
    allow list, an address outside it is refused; with only a deny list, anything else passes.

    APPSEC: the address judged is ``request.client.ip``: the socket peer, or the right-most
    ``X-Forwarded-For`` hop that is not a trusted proxy when the peer is one
    (``server.trusted_proxies``, ``gw.core.forwarding``). What a client writes in
    X-Forwarded-For is never judged unless a trusted proxy vouches for it. IPv4-mapped IPv6
    peers (``::ffff:a.b.c.d``, from a dual-stack listener) match the IPv4 networks.
    An address that is not an IP (a unix socket peer with no trusted proxy in front, a
    trusted proxy's garbled hop) matches no network and is refused: the rule cannot say
    who it is.
    """

    def __init__(self, allow: Sequence[str] | None, deny: Sequence[str] | None) -> None:
        self._allow = PeerList(allow).contains if allow else None
        self._deny = PeerList(deny).contains if deny else None

    def permits(self, address: str) -> bool:
        """Whether ``address`` may use the route."""
        if not _is_ip(address):
            return False
        if self._deny is not None and self._deny(address):
            return False
        return self._allow is None or self._allow(address)

    def check(self, address: str) -> None:
        """Refuse ``address`` unless the rule permits it.

        Raises:
            IpForbidden: 403 ``ip_forbidden``.
        """
        if not self.permits(address):
            raise IpForbidden("your address may not use this route")


def compile_rule(allow: Sequence[str] | None, deny: Sequence[str] | None) -> AddressRule | None:
    """The route's rule, or None when it has neither list."""
    return AddressRule(allow, deny) if allow or deny else None


@lru_cache(maxsize=1024)
def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True
