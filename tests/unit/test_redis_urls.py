"""gw's Redis URLs: the ``redis+sentinel://`` form (gw's own, redis-py has none) parsed into
its parts, and a bad one refused at config load with its exact location."""

from __future__ import annotations

from typing import Any

import pytest

from gw.config.load import parse_config
from gw.errors import ConfigError
from gw.host.redis import SentinelTarget, parse_sentinel_url

BASE: dict[str, Any] = {
    "upstreams": {"svc": {"targets": ["http://127.0.0.1:9"]}},
    "routes": [{"name": "api", "path": "/api/**", "upstream": "svc"}],
}


def test_a_sentinel_url_names_sentinels_service_database_and_passwords() -> None:
    url = "redis+sentinel://gw:p%40ss@s1:26380,s2,[::1]:5000/orders/3?sentinel_password=s%3Dx"
    assert parse_sentinel_url(url) == SentinelTarget(
        sentinels=(("s1", 26380), ("s2", 26379), ("::1", 5000)),
        service="orders",
        db=3,
        username="gw",
        password="p@ss",
        sentinel_password="s=x",
    )
    assert "p@ss" not in repr(parse_sentinel_url(url))
    assert parse_sentinel_url("redis+sentinel://s1/mymaster").db == 0


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://s1", "name the Sentinel service"),
        ("redis+sentinel://s1/", "name the Sentinel service"),
        ("redis+sentinel://s1/m/zero", "the database after the service is a number"),
        ("redis+sentinel://s1/m/0/x", "name the Sentinel service"),
        ("redis+sentinel://s1:0/m", "bad sentinel address 's1:0'"),
        ("redis+sentinel://s1:port/m", "bad sentinel address 's1:port'"),
        ("redis+sentinel://s1,,s2/m", "bad sentinel address ''"),
        ("redis+sentinel://s1/m?timeout=1", "unknown Sentinel URL option 'timeout'"),
    ],
)
def test_a_bad_sentinel_url_says_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_sentinel_url(url)


@pytest.mark.parametrize(
    ("block", "where"),
    [
        ({"rate_limiting": {"backend": "redis+sentinel://s1:x/m"}}, "rate_limiting.backend"),
        ({"cache_store": {"backend": "redis+sentinel://s1/"}}, "cache_store.backend"),
    ],
)
def test_a_bad_sentinel_url_is_a_config_error_at_its_place(
    block: dict[str, Any], where: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config({**BASE, **block}, {})
    assert any(problem.startswith(f"{where}: ") for problem in refused.value.problems)


def test_sentinel_and_cluster_urls_load_for_limits_and_cache() -> None:
    sentinel = "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster/0"
    config = parse_config(
        {
            **BASE,
            "rate_limiting": {"backend": sentinel, "default": {"requests_per_second": 5}},
            "cache_store": {"backend": "redis+cluster://127.0.0.1:7000"},
        },
        {},
    )
    assert config is not None
