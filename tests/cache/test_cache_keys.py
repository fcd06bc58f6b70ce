"""The cache key: what makes two requests share an entry, and what keeps them apart."""

from __future__ import annotations

from typing import Any

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


def test_repeated_parameters_are_sorted_by_value_and_kept_raw() -> None:
    assert _key(query="a=2&a=1") == _key(query="a=1&a=2")
    assert _key(query="a=%41") != _key(query="a=A")
    assert _key(query="a") != _key(query="a=")
    assert _key(query="a=1") != _key(query="a=1&a=1")


@given(st.lists(st.from_regex(r"[a-z]{1,3}(=[a-z0-9%]{0,3})?", fullmatch=True), max_size=6))
def test_any_permutation_of_parameters_names_one_entry(params: list[str]) -> None:
    """Normalizing a query is the same for every order of its parameters."""
    assert normalize_query("&".join(params)) == normalize_query("&".join(reversed(params)))


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


def test_host_is_case_and_port_insensitive_but_hosts_differ() -> None:
    assert _key(host="API.Example.com:8443") == _key()
    assert _key(host="api.example.com.") == _key()
    assert _key(host="other.example.com") != _key()
    assert normalize_host("[::1]:8080") == "[::1]"


def test_path_and_route_are_part_of_the_key() -> None:
    assert _key(path="/orders/2") != _key()
    assert _key(route="orders-v2") != _key()


def test_fields_cannot_bleed_into_each_other() -> None:
    assert _key(path="/a", query="b") != _key(path="/a?b", query="")
    assert _key(user="a:b", api_key=None) != _key(user="a", api_key="b")


def test_description_is_readable_and_holds_no_identity() -> None:
    key = cache_key("orders", "HEAD", "Api.Example.com:80", "/o", "b=1&a=2", {}, (), "alice")
    assert key.description == "orders GET api.example.com/o?a=2&b=1 (per user)"
    assert "alice" not in key.description
    assert len(key.digest) == 64 and key.route == "orders"
