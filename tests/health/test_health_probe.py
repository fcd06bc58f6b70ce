"""Active checks go over the proxy's own transport, against real loopback servers: the
upstream's TLS settings (trusted CA, client certificate, server name sent as SNI), gw's
request framing and response parser, one timeout for the whole answer, a fresh connection
for each check."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gw.health.checker import CheckSpec, probe
from gw.health.layout import CHECK_ERROR, CHECK_TIMEOUT
from gw.upstream.settings import UpstreamTlsSettings
from gw.upstream.tls import TlsClient, build_client
from tests.support.evil_upstream import CLOSE, EvilUpstream, Step, start_evil_upstream
from tests.support.tls import Pki, make_pki, mtls_server_context, server_context
from tests.support.upstream import Upstream, start_upstream

StartHttps = Callable[[ssl.SSLContext], Upstream]

HEAD = b"HTTP/1.1 200 OK\r\n"
SCRIPTS: dict[str, list[Step]] = {
    "garbage": [b"this is not http at all\r\n\r\n", CLOSE],
    "bad_status": [b"HTTP/1.1 999 Nope\r\nContent-Length: 0\r\n\r\n"],
    "silent_close": [CLOSE],
    "short_body": [HEAD + b"Content-Length: 100\r\n\r\nshort", CLOSE],
    "gzip_chunked": [HEAD + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"],
    "dripped_head": [HEAD, 0.2, b"A: 1\r\n", 0.2, b"B: 2\r\n", 0.2, b"Content-Length: 0\r\n\r\n"],
    "dripped_body": [HEAD + b"Content-Length: 3\r\n\r\n", 0.2, b"a", 0.2, b"b", 0.2, b"c"],
}


def spec(url: str, path: str = "/health", timeout: float = 0.5, **fields: object) -> CheckSpec:
    return CheckSpec("orders", url, path, timeout=timeout, **fields)  # type: ignore[arg-type]


def tls_client(**settings: object) -> TlsClient:
    """Build a TLS client as the config does for an upstream's ``tls:`` block."""
    client, problems = build_client(UpstreamTlsSettings(**settings), "upstreams.orders")  # type: ignore[arg-type]
    assert client is not None and not problems
    return client


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("other-pki")).ca


@pytest.fixture
def https() -> Iterator[StartHttps]:
    started: list[Upstream] = []

    def start(context: ssl.SSLContext) -> Upstream:
        started.append(start_upstream(tls=context))
        return started[-1]

    yield start
    for upstream in started:
        upstream.close()


@pytest.fixture(scope="module")
def scripted() -> Iterator[EvilUpstream]:
    server = start_evil_upstream(SCRIPTS)
    yield server
    server.close()


def test_a_check_trusts_the_ca_of_the_upstreams_tls_block_and_nothing_else(
    https: StartHttps, pki: Pki, other_ca: Path
) -> None:
    upstream = https(server_context(pki.server_ip, pki.server_ip_key))
    assert probe(spec(upstream.url, tls=tls_client(ca_file=str(pki.ca)))) == 200
    assert probe(spec(upstream.url, tls=tls_client(ca_file=str(other_ca)))) == CHECK_ERROR
    assert probe(spec(upstream.url, tls=None)) == CHECK_ERROR  # the system's CAs
    assert upstream.count() == 1


def test_a_check_shows_the_client_certificate_of_the_upstreams_tls_block(
    https: StartHttps, pki: Pki
) -> None:
    upstream = https(mtls_server_context(pki.server_ip, pki.server_ip_key, pki.ca))
    mutual = tls_client(
        ca_file=str(pki.ca), client_cert=str(pki.client), client_key=str(pki.client_key)
    )
    assert probe(spec(upstream.url, tls=mutual)) == 200
    assert probe(spec(upstream.url, tls=tls_client(ca_file=str(pki.ca)))) == CHECK_ERROR
    assert upstream.count() == 1


def test_a_check_sends_the_server_name_as_sni_and_the_targets_address_as_host(
    https: StartHttps, pki: Pki
) -> None:
    context = server_context(pki.server_dns, pki.server_dns_key)  # names orders.internal only
    names: list[str | None] = []
    context.sni_callback = lambda _sock, name, _context: names.append(name)
    upstream = https(context)
    named = tls_client(ca_file=str(pki.ca), server_name="orders.internal")
    assert probe(spec(upstream.url, "/health?deep=1", tls=named)) == 200
    assert names == ["orders.internal"]
    received = upstream.last()
    assert received.target == "/health?deep=1"
    assert received.header("Host") == f"127.0.0.1:{upstream.port}"
    assert received.header("User-Agent") == "gw-health"
    assert received.header("Connection") == "close"
    unnamed = tls_client(ca_file=str(pki.ca))  # checks 127.0.0.1: not in the certificate
    assert probe(spec(upstream.url, tls=unnamed)) == CHECK_ERROR
    assert upstream.count() == 1


@pytest.mark.parametrize("case", ["dripped_head", "dripped_body"])
def test_the_whole_answer_must_arrive_within_the_checks_timeout(
    scripted: EvilUpstream, case: str
) -> None:
    """Every silence is shorter than the timeout; the answer as a whole is longer."""
    started = time.monotonic()
    assert probe(spec(scripted.url, f"/case/{case}", timeout=0.4)) == CHECK_TIMEOUT
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    "case", ["garbage", "bad_status", "silent_close", "short_body", "gzip_chunked"]
)
def test_an_answer_gw_would_not_proxy_fails_the_check(scripted: EvilUpstream, case: str) -> None:
    assert probe(spec(scripted.url, f"/case/{case}")) == CHECK_ERROR
    assert scripted.requests_for(f"/case/{case}")  # it was asked, and answered so


def test_every_check_makes_its_own_connection(scripted: EvilUpstream) -> None:
    for _ in range(3):
        assert probe(spec(scripted.url, "/ok/fresh")) == 200
    connections = [seen.connection for seen in scripted.requests_for("/ok/fresh")]
    assert len(set(connections)) == 3
