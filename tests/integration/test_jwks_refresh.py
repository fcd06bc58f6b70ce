"""A JWKS refresh never holds the request that triggered it, in real gunicorn workers.

The key set is cached for 1 s; then the identity provider turns slow (3 s per answer). The
request that finds the cache expired starts the refresh and is answered at once with the
known keys, under the gevent worker (the refresh runs in a greenlet) and under sync (a
thread next to the one request thread). Before issue 13, that request fetched the keys
itself and waited the 3 s.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from tests.support.gateway import start_gateway
from tests.support.jwks_server import JwksServer, start_jwks_server
from tests.support.tokens import AUDIENCE, ISSUER, SigningKey, claims, jwks, rsa_key
from tests.support.upstream import Upstream, start_upstream, wait_for

pytestmark = pytest.mark.integration

SLOW_PROVIDER = 3.0


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return rsa_key("rsa-refresh")


@pytest.fixture
def idp(key: SigningKey) -> Iterator[JwksServer]:
    server = start_jwks_server(jwks(key))
    yield server
    server.close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = start_upstream()
    yield server
    server.close()


@pytest.mark.parametrize("worker_class", ["gw.edge.worker.BalancedGeventWorker", "sync"])
def test_an_expired_key_set_is_refreshed_behind_the_request(
    idp: JwksServer, upstream: Upstream, key: SigningKey, worker_class: str
) -> None:
    config = {
        "upstreams": {"svc": {"targets": [upstream.url]}},
        "routes": [{"name": "api", "path": "/api/**", "upstream": "svc"}],
        "auth": {
            "type": "jwt",
            "jwks_uri": idp.url,
            "issuer": ISSUER,
            "audiences": [AUDIENCE],
            "jwks_cache_seconds": 1,
            "jwks_refetch_cooldown": 1,
            "jwks_timeout": 5,
        },
    }
    gw = start_gateway(config, workers=1, worker_class=worker_class)
    headers = {"Authorization": f"Bearer {key.mint(claims())}"}
    try:
        assert requests.get(f"{gw.url}/api/a", headers=headers, timeout=10).status_code == 200
        assert idp.fetches == 1
        idp.mode, idp.delay = "slow", SLOW_PROVIDER
        time.sleep(1.2)  # the cached key set expires
        started = time.monotonic()
        first = requests.get(f"{gw.url}/api/b", headers=headers, timeout=10)
        second = requests.get(f"{gw.url}/api/c", headers=headers, timeout=10)
        answered_in = time.monotonic() - started
        assert (first.status_code, second.status_code) == (200, 200)
        assert answered_in < SLOW_PROVIDER / 2, f"{answered_in:.2f}s: held by the refresh"
        assert wait_for(lambda: idp.fetches == 2, timeout=5)  # the refresh did run
    finally:
        gw.stop()
