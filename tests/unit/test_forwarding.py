"""Who the client is: a trusted proxy is trusted however its address is spelled."""

from __future__ import annotations

import ipaddress

import pytest

from gw.core.forwarding import TrustedProxies, parse_networks
from gw.observe.metrics import MetricsSettings


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


def test_a_peer_list_parses_to_unix_and_networks() -> None:
    """Host bits are allowed, a bare address is its own network, 'unix' is not a network."""
    unix, networks = parse_networks(["10.0.0.1/8", "::1", "unix"])
    assert unix is True
    assert networks == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))
    assert parse_networks([]) == (False, ())


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "localhost", "UNIX", ""])
def test_a_peer_list_refuses_what_is_not_a_network(entry: str) -> None:
    """The one validator refuses the entry, and so do the settings that take a peer list."""
    with pytest.raises(ValueError):
        parse_networks([entry])
    with pytest.raises(ValueError):
        MetricsSettings.model_validate({"allow_from": ["unix", entry]})
