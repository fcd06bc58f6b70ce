"""Whose bucket a request draws from: one client address, one bucket, never a stranger's."""

from __future__ import annotations

import pytest

from gw.admission import Limit, Requester, bucket_key
from gw.limits import Rate


def _bucket(ip: str, key: tuple[str, ...] = ("client_ip",)) -> str:
    return bucket_key(Limit("l", Rate(1, 60), key), Requester(client_ip=ip, route="r", headers={}))


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("::ffff:10.0.0.1", "::ffff:10.0.0.2"),  # IPv4 clients of a dual-stack listener
        ("::ffff:10.0.0.1", "::1"),
        ("::1", "::2"),  # loopback, and the deprecated IPv4-compatible ::0.0.0.2
        ("::1", "::"),
        ("::10.0.0.1", "::10.0.0.2"),  # IPv4-compatible (deprecated): kept whole, not /64
        ("fe80::1", "fe80::2"),  # link-local: the /64 is the whole link, not one site
        ("64:ff9b::10.0.0.1", "64:ff9b::10.0.0.2"),  # NAT64 well-known prefix
        ("2001:db8:0:1::1", "2001:db8:0:2::1"),
    ],
)
def test_different_clients_never_share_a_bucket(first: str, second: str) -> None:
    assert _bucket(first) != _bucket(second)


@pytest.mark.parametrize(
    ("wrapped", "plain"),
    [
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("::FFFF:0a00:0001", "10.0.0.1"),
        ("64:ff9b::10.0.0.1", "10.0.0.1"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "192.0.2.45"),  # Teredo: its client's IPv4
    ],
)
def test_an_ipv4_client_has_one_bucket_however_its_address_is_spelled(
    wrapped: str, plain: str
) -> None:
    assert _bucket(wrapped) == _bucket(plain) == "l|ip:" + plain


def test_ipv6_clients_are_grouped_by_64_where_one_site_owns_the_64() -> None:
    assert _bucket("2001:db8::1") == _bucket("2001:db8::ffff:1") == "l|ip:2001:db8::/64"
    assert _bucket("fd00:1:2:3::9") == "l|ip:fd00:1:2:3::/64"


def test_loopback_and_ipv4_compatible_are_keyed_whole() -> None:
    assert _bucket("::1") == "l|ip:::1"
    assert _bucket("::10.0.0.1") == "l|ip:::a00:1"


def test_fallbacks_to_the_client_address_use_the_same_key() -> None:
    for key in (("user",), ("api_key",), ("header:X-Tenant",)):
        assert _bucket("::ffff:10.0.0.1", key) == "l|ip:10.0.0.1"


def test_what_is_not_an_address_is_kept_as_it_is() -> None:
    assert _bucket("unix") == "l|ip:unix"
    assert _bucket("") == "l|ip:"
