"""Fixtures of the conformance gates: gunicorn's corpus, a recording upstream, long-lived
gateways (one per worker class and limit setting), and nginx with the shipped drop-in.

Everything here is shared across the folder's tests (session scope) so that the gates cost a
few gateway starts, not one per case.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.corpus_rules import Limits
from tests.support.corpus import Case, CorpusUnavailable, corpus_root, gunicorn_version, load_cases
from tests.support.gateway import GatewayProcess, free_port, start_gateway
from tests.support.recorder import Recorder, start_recorder
from tests.support.wire import exchange

# The worker classes gw supports (None: gunicorn.conf.py's default, BalancedGeventWorker).
WORKER_CLASSES = {
    "gevent": None,
    "gthread": "gw.edge.worker.BalancedThreadWorker",
    "sync": "sync",
}


def catch_all_config(upstream_url: str, server: dict[str, Any] | None = None) -> dict[str, Any]:
    """One upstream behind one route that takes every path and every method."""
    config: dict[str, Any] = {
        "upstreams": {"rec": {"targets": [upstream_url]}},
        "routes": [{"name": "all", "path": "/**", "upstream": "rec"}],
    }
    if server is not None:
        config["server"] = server
    return config


@pytest.fixture(scope="session")
def gunicorn_corpus() -> list[Case]:
    """gunicorn's request corpus from the sdist of the installed version (downloaded once)."""
    try:
        return load_cases(corpus_root())
    except CorpusUnavailable as ex:
        message = f"gunicorn {gunicorn_version()}'s request corpus is unavailable: {ex}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}\n(CI=true: the corpus gate must run)")
        pytest.skip(message)


@pytest.fixture(scope="session")
def recorder() -> Iterator[Recorder]:
    upstream = start_recorder()
    yield upstream
    upstream.close()


class GatewayPool:
    """Gateways on demand, one per (worker class, limits), kept for the whole session."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.started: dict[tuple[str, Limits], GatewayProcess] = {}
        self.ready: set[tuple[str, Limits]] = set()

    def __repr__(self) -> str:
        return f"GatewayPool({len(self.started)} gateways)"

    def __call__(self, worker: str, limits: Limits = ()) -> GatewayProcess:
        key = (worker, limits)
        self._start(key)
        gateway = self.started[key]
        if key not in self.ready:
            wait_answering(gateway)
            self.ready.add(key)
        assert gateway.proc.poll() is None, f"the {worker} gateway died:\n{gateway.log_text()}"
        return gateway

    def prestart(self, keys: list[tuple[str, Limits]]) -> None:
        """Start every gateway in ``keys`` at once (their boots overlap; PERF of the suite)."""
        for key in dict.fromkeys(keys):
            self._start(key)

    def _start(self, key: tuple[str, Limits]) -> None:
        if key in self.started:
            return
        worker, limits = key
        env = {f"GW_LIMIT_{name[6:].upper()}": str(value) for name, value in limits}
        port = self._unused_port()  # gateways started together must not pick the same one
        gateway = start_gateway(
            catch_all_config(self.recorder.url),
            workers=1,
            threads=4,
            worker_class=WORKER_CLASSES[worker],
            extra_env=env,
            bind=f"127.0.0.1:{port}",
            wait=False,
        )
        gateway.port = port
        self.started[key] = gateway

    def _unused_port(self) -> int:
        taken = {g.port for g in self.started.values()}
        for _ in range(100):
            port = free_port()
            if port not in taken:
                return port
        raise RuntimeError("no free port")


@pytest.fixture(scope="session")
def gateways(recorder: Recorder) -> Iterator[GatewayPool]:
    pool = GatewayPool(recorder)
    yield pool
    stop_all(list(pool.started.values()))


def stop_all(gateways: list[GatewayProcess]) -> None:
    """Stop gateways together: SIGQUIT (quick shutdown) to all first, then wait for each."""
    for gateway in gateways:
        if gateway.proc.poll() is None:
            gateway.proc.send_signal(signal.SIGQUIT)  # a quick stop: nothing is in flight
    for gateway in gateways:
        gateway.stop()  # waits (and kills a straggler)


def wait_answering(gateway: GatewayProcess, timeout: float = 60.0) -> None:
    """Wait until /health answers 200 to a request small enough for any limit a case sets."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gateway.proc.poll() is not None:
            raise RuntimeError(f"gateway exited:\n{gateway.log_text()}")
        try:
            if exchange(gateway.port, b"GET /health HTTP/1.0\r\n\r\n", timeout=1).statuses == [200]:
                return
        except OSError:
            pass
        time.sleep(0.1)
    gateway.stop()
    raise RuntimeError(f"gateway did not answer /health:\n{gateway.log_text()}")


@pytest.fixture(params=sorted(WORKER_CLASSES), scope="session")
def worker(request: pytest.FixtureRequest) -> str:
    """Each supported worker class by its short name: gevent (the default), gthread, sync."""
    return str(request.param)


# -- nginx with the shipped drop-in ------------------------------------------------------------


@dataclass
class NginxStack:
    """nginx (deploy/nginx/gw.conf) -> gw on a unix socket -> the recording upstream."""

    nginx: Any  # tests.integration.test_deploy.Nginx
    gateway: GatewayProcess
    recorder: Recorder

    @property
    def port(self) -> int:
        return int(self.nginx.port)


@pytest.fixture(scope="session")
def nginx_stacks(
    recorder: Recorder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], NginxStack]]:
    """nginx in front of a gateway of the given worker class, started on first use."""
    # The deploy tests own the helpers that run nginx with the drop-in as shipped.
    from tests.integration.test_deploy import (
        require_tool,
        shipped_server_block,
        start_nginx,
        wait_healthy_through,
    )

    stacks: dict[str, NginxStack] = {}

    def get(worker: str) -> NginxStack:
        if worker not in stacks:
            nginx_bin = require_tool("nginx", "nginx", fail_on_ci=True)
            directory: Path = tmp_path_factory.mktemp(f"nginx-{worker}")
            sock = directory / "gw.sock"
            config = catch_all_config(recorder.url, shipped_server_block())
            gateway = start_gateway(
                config, workers=1, worker_class=WORKER_CLASSES[worker], bind=f"unix:{sock}"
            )
            try:
                nginx = start_nginx(nginx_bin, directory / "nginx", sock)
                wait_healthy_through(nginx, gateway)
            except BaseException:
                gateway.stop()
                raise
            stacks[worker] = NginxStack(nginx, gateway, recorder)
        return stacks[worker]

    yield get
    for stack in stacks.values():
        stack.nginx.stop()
    stop_all([stack.gateway for stack in stacks.values()])
