"""One effective host per request (RFC 9112 section 3.2), used for routing, X-Forwarded-Host,
preserve_host and the cache key; ``server.hosts``; and which method an OPTIONS is routed as.
Every worker class, real gunicorn, recording upstreams."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from gw.auth import hash_api_key
from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.rawhttp import RawResponse, raw_request
from tests.support.upstream import Upstream, start_upstream

WORKERS = [None, "gw.edge.worker.BalancedThreadWorker", "sync"]
API_KEY = "k-1b2c3d4e5f6a7b8c9d0e"


class Stack:
    def __init__(self, gw: GatewayProcess, public: Upstream, admin: Upstream) -> None:
        self.gw = gw
        self.public = public
        self.admin = admin

    def send(self, head: str) -> RawResponse:
        return raw_request(self.gw.port, head.encode("latin-1") + b"\r\n\r\n")

    def clear(self) -> None:
        for upstream in (self.public, self.admin):
            with upstream.lock:
                upstream.received.clear()


def config(public: Upstream, admin: Upstream) -> dict[str, Any]:
    return {
        "server": {"hosts": ["public.test", "admin.test", "*.example.com", "localhost"]},
        "upstreams": {
            "public": {"targets": [public.url], "preserve_host": True},
            "admin": {"targets": [admin.url], "preserve_host": True},
        },
        "auth": {
            "type": "api_key",
            "api_keys": {
                "keys": [{"id": "k1", "sha256": hash_api_key(API_KEY), "consumer": "acme"}]
            },
        },
        "cors": {"allowed_origins": ["https://app.example.com"]},
        "routes": [
            {"name": "public", "path": "/secret", "upstream": "public", "auth": "none"},
            {
                "name": "admin",
                "path": "/secret",
                "host": "admin.test",
                "upstream": "admin",
                "auth": "none",
            },
            {
                "name": "private-get",
                "path": "/private",
                "methods": ["GET"],
                "upstream": "public",
                "auth": "none",
            },
            {"name": "private", "path": "/private/**", "upstream": "public", "auth": "required"},
        ],
    }


@pytest.fixture(scope="module", params=WORKERS, ids=["gevent", "gthread", "sync"])
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    public, admin = start_upstream(), start_upstream()
    gw = start_gateway(config(public, admin), workers=1, threads=2, worker_class=request.param)
    yield Stack(gw, public, admin)
    gw.stop()
    public.close()
    admin.close()


@pytest.fixture()
def clean(stack: Stack) -> Stack:
    stack.clear()
    return stack


@pytest.mark.parametrize(
    "host_lines",
    [
        "",  # missing
        "Host: public.test\r\nHost: admin.test",  # repeated
        "Host: a b/c@d",
        "Host: gw:@evil.example",
        "Host: public.test/x",
        "Host: [::1",
    ],
    ids=["missing", "repeated", "spaces-slash-at", "userinfo", "path", "broken-ipv6"],
)
def test_a_bad_host_is_refused_before_any_upstream(clean: Stack, host_lines: str) -> None:
    head = "GET /secret HTTP/1.1\r\nConnection: close"
    if host_lines:
        head = f"GET /secret HTTP/1.1\r\n{host_lines}\r\nConnection: close"
    answer = clean.send(head)
    assert answer.status == 400
    if (answer.header("Content-Type") or "").startswith("application/json"):
        assert answer.json()["error"] in ("invalid_host", "bad_request")
    else:  # gunicorn's stock sync worker refuses a repeated Host itself, in its own words
        assert stack_is_sync(clean)
    assert clean.public.count() == 0 and clean.admin.count() == 0


def stack_is_sync(stack: Stack) -> bool:
    return stack.gw.env.get("GW_WORKER_CLASS") == "sync"


def test_http10_without_host_is_served(clean: Stack) -> None:
    answer = clean.send("GET /health HTTP/1.0")
    assert answer.status == 200


def test_absolute_form_authority_wins_over_host_everywhere(clean: Stack) -> None:
    answer = clean.send(
        "GET http://public.test/secret HTTP/1.1\r\nHost: admin.test\r\nConnection: close"
    )
    assert answer.status == 200
    assert clean.admin.count() == 0, "routed by the Host header instead of the target"
    seen = clean.public.last()
    assert seen.target == "/secret"
    assert seen.header("Host") == "public.test"  # preserve_host sends the effective host
    assert seen.header("X-Forwarded-Host") == "public.test"


def test_routing_by_host_header(clean: Stack) -> None:
    answer = clean.send("GET /secret HTTP/1.1\r\nHost: Admin.Test\r\nConnection: close")
    assert answer.status == 200
    assert clean.admin.count() == 1 and clean.public.count() == 0
    assert clean.admin.last().header("X-Forwarded-Host") == "admin.test"


def test_absolute_form_with_another_scheme_is_refused(clean: Stack) -> None:
    answer = clean.send("GET ftp://public.test/secret HTTP/1.1\r\nHost: public.test")
    assert answer.status == 400
    assert clean.public.count() == 0


def test_hosts_not_listed_get_421(clean: Stack) -> None:
    answer = clean.send("GET /secret HTTP/1.1\r\nHost: evil.test\r\nConnection: close")
    assert answer.status == 421
    assert answer.json()["error"] == "unknown_host"
    assert clean.public.count() == 0
    listed = clean.send("GET /secret HTTP/1.1\r\nHost: api.example.com:8080\r\nConnection: close")
    assert listed.status == 200
    assert clean.public.last().header("X-Forwarded-Host") == "api.example.com:8080"


def test_health_answers_for_any_valid_host(clean: Stack) -> None:
    assert (
        clean.send("GET /health HTTP/1.1\r\nHost: 10.1.2.3:8080\r\nConnection: close").status == 200
    )


def test_options_with_a_requested_method_is_not_routed_as_that_method(clean: Stack) -> None:
    # Not a preflight gw answers (no Origin): routed, authenticated and forwarded as OPTIONS.
    answer = clean.send(
        "OPTIONS /private HTTP/1.1\r\nHost: public.test\r\n"
        "Access-Control-Request-Method: GET\r\nConnection: close"
    )
    assert answer.status == 401
    assert clean.public.count() == 0
