"""Shared fixtures: real upstreams on loopback and real gunicorn gateways."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.upstream import Upstream, start_upstream


@pytest.fixture(scope="session", autouse=True)
def _temp_dir_of_this_run() -> Iterator[None]:
    """Put every temp file of this test process under one directory, removed at the end.

    A gateway built in process without ``GW_RUNTIME_DIR`` makes private directories for its
    tables (``gw.host.rundir.private_dir``: a 1 MiB rate-limit table each), which go only when
    this process exits; here they go with the rest of the run's temp files.
    ``GW_TEST_KEEP_TMP=1`` keeps them, as it keeps the test gateways' directories.
    """
    base = tempfile.mkdtemp(prefix="gw-tests-")
    previous, tempfile.tempdir = tempfile.tempdir, base
    yield
    tempfile.tempdir = previous
    if os.environ.get("GW_TEST_KEEP_TMP") != "1":
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = start_upstream()
    yield server
    server.close()


@pytest.fixture
def make_upstream() -> Iterator[Callable[[], Upstream]]:
    started: list[Upstream] = []

    def make() -> Upstream:
        server = start_upstream()
        started.append(server)
        return server

    yield make
    for server in started:
        server.close()


@pytest.fixture
def gateway() -> Iterator[Callable[..., GatewayProcess]]:
    started: list[GatewayProcess] = []

    def start(config: dict[str, Any] | str, **kwargs: Any) -> GatewayProcess:
        process = start_gateway(config, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
