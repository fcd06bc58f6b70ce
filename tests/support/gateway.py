"""Run the real gateway: ``gunicorn -c gunicorn.conf.py gw.app:app`` on an ephemeral port."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

from gw.host import rundir

ROOT = Path(__file__).resolve().parents[2]

# Each gateway's directory (config, log, runtime tables) is removed when the test process ends,
# not at stop: a test may read the log of a gateway it stopped. GW_TEST_KEEP_TMP=1 keeps them.
_made: list[Path] = []


@atexit.register
def _remove_made() -> None:
    if os.environ.get("GW_TEST_KEEP_TMP") != "1":
        for path in _made:
            shutil.rmtree(path, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class GatewayProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    config_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def access_lines(
        self, count: int = 0, timeout: float = 5.0, **where: Any
    ) -> list[dict[str, Any]]:
        """Every access line written so far.

        gw writes its lines in batches, within 0.1 s of their answers (``gw.observe.accesslog``).
        With ``count``, or with ``where`` (field values, e.g. ``request_id=...``), wait up to
        ``timeout`` until at least ``count`` lines (1 when only ``where`` is given) carry those
        values, then return every line all the same (the caller asserts).
        """
        wanted = count or (1 if where else 0)
        deadline = time.monotonic() + timeout
        while True:
            lines = self._read_access_lines()
            matching = [x for x in lines if all(x.get(k) == v for k, v in where.items())]
            if len(matching) >= wanted or time.monotonic() >= deadline:
                return lines
            time.sleep(0.02)

    def _read_access_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    lines.append(json.loads(line))
        return lines

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        out = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False
        )
        return [int(p) for p in out.stdout.split()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def start_gateway(
    config: dict[str, Any] | str,
    *,
    workers: int = 2,
    threads: int = 4,
    worker_class: str | None = None,
    bind: str | None = None,
    extra_env: dict[str, str] | None = None,
    wait: bool = True,
    runtime_dir: bool = True,
    app: str = "gw.app:app",
) -> GatewayProcess:
    """Write ``config`` to a temp file and start gunicorn on it; wait until /health answers.

    ``app``: the WSGI app gunicorn loads (a probe that wraps gw's, for tests of the worker).

    ``runtime_dir=False`` starts it without ``GW_RUNTIME_DIR``, as the demo and a plain
    ``gunicorn gw.app:app`` do: the gateway derives its directory from the config's path.
    """
    tmp = Path(tempfile.mkdtemp(prefix="gw-test-"))
    _made.append(tmp)
    config_path = tmp / "gw.yaml"
    text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
    config_path.write_text(text)
    port = free_port()
    env = {
        **os.environ,
        "GW_CONFIG": str(config_path),
        "GW_BIND": bind or f"127.0.0.1:{port}",
        "GW_WORKERS": str(workers),
        "GW_THREADS": str(threads),
        "GW_TIMEOUT": "20",
        "GW_GRACEFUL_TIMEOUT": "5",
        "PYTHONUNBUFFERED": "1",
        "GW_RUNTIME_DIR": str(tmp / "run"),  # the shared tables, for the operator tools
        **(extra_env or {}),
    }
    if not runtime_dir:
        env.pop("GW_RUNTIME_DIR")
        # The directory the gateway derives from its config's path (under /dev/shm, so in
        # memory): a fresh name per test gateway, so it goes with the rest at exit.
        _made.append(Path(rundir.default_runtime_dir(str(config_path))))
    if worker_class:
        env["GW_WORKER_CLASS"] = worker_class
    log_path = tmp / "gw.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), app],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    gateway = GatewayProcess(proc, port, log_path, config_path, env)
    if wait and not bind:
        _wait_healthy(gateway)
    return gateway


def _wait_healthy(gateway: GatewayProcess, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gateway.proc.poll() is not None:
            raise RuntimeError(f"gateway exited:\n{gateway.log_text()}")
        try:
            if requests.get(f"{gateway.url}/health", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    gateway.stop()
    raise RuntimeError(f"gateway did not become healthy:\n{gateway.log_text()}")
