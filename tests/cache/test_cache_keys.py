"""The cache key: what makes two requests share an entry, and what keeps them apart."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gw.cache.keys import cache_key, normalize_host, normalize_query


def _key(**changes: Any) -> str:
    args: dict[str, Any] = {
        "route": "orders",
        "method": "GET",
        "host": "api.example.com",
        "path": "/orders/1",
        "query": "a=1&b=2",
        "headers": {"accept-language": "fr"},
        "vary": ("accept-language",),
        "user": None,
    }
    args.update(changes)
    return cache_key(**args).digest


def test_query_order_does_not_matter() -> None:
    assert _key(query="b=2&a=1") == _key(query="a=1&b=2") == _key(query="a=1&&b=2")


def test_repeated_parameters_keep_their_order_and_raw_bytes() -> None:
    """An upstream may read the first or the last of repeated parameters: both orders differ."""
    assert _key(query="cb=evil&cb=good") != _key(query="cb=good&cb=evil")
    assert _key(query="a=2&b=1&a=1") == _key(query="b=1&a=2&a=1")
    assert _key(query="a=%41") != _key(query="a=A")
    assert _key(query="a") != _key(query="a=")
    assert _key(query="a=1") != _key(query="a=1&a=1")


_PARAM = st.tuples(st.sampled_from("abc"), st.from_regex(r"(=[a-z0-9%]{0,3})?", fullmatch=True))


@given(st.permutations(["a=1", "bb", "c=%41", "d="]))
def test_any_order_of_distinct_names_names_one_entry(params: list[str]) -> None:
    """Normalizing a query is the same for every order of parameters with distinct names."""
    assert normalize_query("&".join(params)) == "a=1&bb&c=%41&d="


@given(st.lists(_PARAM, max_size=8))
def test_each_names_values_keep_their_relative_order(params: list[tuple[str, str]]) -> None:
    """Whatever the names, the values of one name appear in the order the client sent them."""
    normalized = normalize_query("&".join(name + value for name, value in params))
    kept = [p.partition("=") for p in normalized.split("&") if p]
    for name in "abc":
        sent = [name + value for n, value in params if n == name]
        assert [n + sep + v for n, sep, v in kept if n == name] == sent


def test_user_a_never_shares_user_b_entry() -> None:
    assert _key(user="alice") != _key(user="bob")
    assert _key(user="alice") != _key(user=None)
    assert _key(user="alice", api_key="k1") != _key(user="alice", api_key="k2")


def test_listed_headers_are_keyed_and_others_are_not() -> None:
    assert _key(headers={"accept-language": "de"}) != _key()
    assert _key(headers={}) != _key(headers={"accept-language": ""})
    assert _key(headers={"accept-language": "fr", "user-agent": "x"}) == _key()


def test_head_shares_get_entry_and_other_methods_do_not() -> None:
    assert _key(method="HEAD") == _key(method="GET")
    assert _key(method="POST") != _key(method="GET")


def test_host_is_case_insensitive_but_hosts_differ() -> None:
    assert _key(host="API.Example.com") == _key()
    assert _key(host="other.example.com") != _key()


@pytest.mark.parametrize(
    "other",
    [
        "api.example.com:@evil.example",  # userinfo-like text after a colon
        "api.example.com:8443",  # the upstream may build links with the port it is told
        "api.example.com:",
        "api.example.com.",
        "api.example.com:80:80",
        "api.example.com,evil.example",  # two Host headers joined
        "api.example.com evil.example",
    ],
)
def test_different_host_values_never_share_an_entry(other: str) -> None:
    """APPSEC: the upstream sees the host as sent, so anything but case makes another entry."""
    assert _key(host=other) != _key()
    assert normalize_host(other) == other.lower()


def test_ipv6_host_literals_are_kept_whole() -> None:
    assert normalize_host("[::1]:8080") == "[::1]:8080"
    assert _key(host="[::1]:8080") != _key(host="[::1]")
    assert _key(host="[::1]x") != _key(host="[::1]")


def test_the_scheme_is_part_of_the_key() -> None:
    """An http answer (links, redirects to http://) is never served to an https client."""
    assert _key(scheme="https") != _key(scheme="http")
    assert _key(scheme="HTTPS") == _key(scheme="https")
    assert _key() == _key(scheme="http")  # the default, for callers that do not say


def test_path_and_route_are_part_of_the_key() -> None:
    assert _key(path="/orders/2") != _key()
    assert _key(route="orders-v2") != _key()


def test_fields_cannot_bleed_into_each_other() -> None:
    assert _key(path="/a", query="b") != _key(path="/a?b", query="")
    assert _key(user="a:b", api_key=None) != _key(user="a", api_key="b")


def test_description_is_readable_and_holds_no_identity() -> None:
    key = cache_key(
        "orders", "HEAD", "Api.Example.com:80", "/o", "b=1&a=2", {}, (), "alice", scheme="https"
    )
    assert key.description == "orders GET https://api.example.com:80/o?a=2&b=1 (per user)"
    assert "alice" not in key.description
    assert len(key.digest) == 64 and key.route == "orders"
