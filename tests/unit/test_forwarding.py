"""Who the client is: a trusted proxy is trusted however its address is spelled."""

from __future__ import annotations

from gw.core.forwarding import TrustedProxies


def test_a_trusted_proxy_reached_through_a_dual_stack_listener_is_trusted() -> None:
    """A dual-stack listener reports the IPv4 proxy 127.0.0.1 as ::ffff:127.0.0.1."""
    proxies = TrustedProxies(["127.0.0.1/32"])
    info = proxies.resolve("::ffff:127.0.0.1", "203.0.113.9", "https", "http")
    assert (info.ip, info.proto, info.peer_trusted) == ("203.0.113.9", "https", True)


def test_a_mapped_hop_of_a_trusted_proxy_chain_is_trusted() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"])
    info = proxies.resolve("10.0.0.2", "203.0.113.9, ::ffff:10.0.0.1", None, "http")
    assert info.ip == "203.0.113.9"


def test_an_untrusted_peer_stays_untrusted_in_every_spelling() -> None:
    proxies = TrustedProxies(["127.0.0.1/32"])
    for peer in ("::ffff:127.0.0.2", "127.0.0.2", "::1", "::127.0.0.1"):
        info = proxies.resolve(peer, "203.0.113.9", "https", "http")
        assert (info.ip, info.proto, info.peer_trusted) == (peer, "http", False)
