"""Every hostile path in the corpus, through real gunicorn: it is refused before any upstream
sees it, or it reaches exactly the upstream its canonical path routes to, with exactly the
canonical path (re-encoded). No path can reach a different route or upstream path."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gw.core.paths import encode_path
from gw.errors import InvalidPath
from tests.data.hostile_paths import HOSTILE_PATHS
from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.rawhttp import raw_request
from tests.support.upstream import Upstream, start_upstream


@pytest.fixture(scope="module")
def setup() -> Iterator[tuple[GatewayProcess, Upstream, Upstream]]:
    public, admin = start_upstream(), start_upstream()
    gw = start_gateway(
        {
            "upstreams": {"public": {"targets": [public.url]}, "admin": {"targets": [admin.url]}},
            "routes": [
                {"name": "public", "path": "/**", "upstream": "public"},
                {"name": "admin", "path": "/admin/**", "upstream": "admin"},
            ],
        },
        workers=2,
    )
    yield gw, public, admin
    gw.stop()
    public.close()
    admin.close()


# Cases that are request *paths* (a '?' on the wire starts the query, and absolute-form
# targets are a request-target matter: both are covered by the unit tests of split_target).
PATH_CASES = [(raw, exp) for raw, exp in HOSTILE_PATHS if raw.startswith("/") and "?" not in raw]


@pytest.mark.parametrize(("raw", "expected"), PATH_CASES, ids=[c[0][:40] for c in PATH_CASES])
def test_hostile_path_is_refused_or_reaches_exactly_its_route(
    setup: tuple[GatewayProcess, Upstream, Upstream], raw: str, expected: object
) -> None:
    gw, public, admin = setup
    before = (public.count(), admin.count())
    target = raw.encode("utf-8", "surrogateescape")
    response = raw_request(
        gw.port, b"GET " + target + b" HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n"
    )
    if expected is InvalidPath:
        assert response.status == 400, response.body
        assert response.json()["error"] in ("invalid_path", "bad_request")
        assert (public.count(), admin.count()) == before
        return
    assert isinstance(expected, str)
    assert response.status == 200, response.body
    goes_to_admin = expected == "/admin" or expected.startswith("/admin/")
    upstream = admin if goes_to_admin else public
    other = public if goes_to_admin else admin
    assert upstream.count() == (before[1] if goes_to_admin else before[0]) + 1
    assert other.count() == (before[0] if goes_to_admin else before[1])
    assert upstream.last().target == encode_path(expected)
