"""Canaries through real gunicorn: a header picks the canary route, and a cookie keeps each user
on one side of a 90/10 weighted split (``balance: hash``, ``hash_key: cookie:uid``)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.cookies import SimpleCookie

import pytest
import requests

from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.upstream import Upstream, start_upstream

USERS = 800
# The targets' ports are random, so each run hashes the users afresh: the count on the 10 % side
# is Binomial(USERS, 0.1). Five standard deviations either side fail a correct gateway about once
# in 1.7 million runs (the 200-user, 2.4-sigma bound of before failed CI once with 32 of 200).
SPLIT_MEAN = 0.1 * USERS
SPLIT_SPREAD = 5 * math.sqrt(USERS * 0.1 * 0.9)


@dataclass
class Site:
    gw: GatewayProcess
    main: Upstream  # weight 90
    split: Upstream  # weight 10
    canary: Upstream  # only for X-Canary: 1


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    main, split, canary = start_upstream(), start_upstream(), start_upstream()
    config = {
        "upstreams": {
            "app": {
                "targets": [{"url": main.url, "weight": 90}, {"url": split.url, "weight": 10}],
                "balance": "hash",
                "hash_key": "cookie:uid",
            },
            "canary": {"targets": [canary.url]},
        },
        "routes": [
            {"path": "/api/**", "upstream": "app"},
            {"path": "/api/**", "upstream": "canary", "match": {"headers": {"X-Canary": "1"}}},
        ],
    }
    gw = start_gateway(config, workers=2)
    try:
        yield Site(gw, main, split, canary)
    finally:
        gw.stop()
        for upstream in (main, split, canary):
            upstream.close()


def _uid(cookie: str | None) -> str:
    parsed: SimpleCookie = SimpleCookie()
    parsed.load(cookie or "")
    return parsed["uid"].value


def test_the_canary_header_picks_the_canary_route(site: Site) -> None:
    before = site.canary.count(), site.main.count() + site.split.count()
    session = requests.Session()
    for i in range(10):
        headers = {"X-Canary": "1"} if i % 2 else {}
        assert session.get(f"{site.gw.url}/api/{i}", headers=headers, timeout=5).status_code == 200
    assert site.canary.count() - before[0] == 5
    assert site.main.count() + site.split.count() - before[1] == 5
    assert site.canary.last().header("X-Canary") == "1"


def test_a_cookie_keeps_each_user_on_one_side_of_a_90_10_split(site: Site) -> None:
    def visit(first: int) -> list[int]:
        session = requests.Session()
        cookies = [f"uid=u{user}" for user in range(first, USERS, 4)]
        url = f"{site.gw.url}/api/u"
        return [session.get(url, headers={"Cookie": c}, timeout=5).status_code for c in cookies]

    for _ in range(2):  # every user twice: the second visit must land where the first did
        with ThreadPoolExecutor(4) as pool:
            statuses = [s for batch in pool.map(visit, range(4)) for s in batch]
        assert statuses == [200] * USERS
    sides: dict[str, set[int]] = {}
    for side, upstream in enumerate((site.main, site.split)):
        for received in upstream.received:
            if received.target == "/api/u":
                sides.setdefault(_uid(received.header("Cookie")), set()).add(side)
    assert len(sides) == USERS
    assert all(len(seen) == 1 for seen in sides.values())  # sticky
    on_split = sum(1 for seen in sides.values() if seen == {1})
    assert abs(on_split - SPLIT_MEAN) <= SPLIT_SPREAD, on_split  # weights hold over keys
