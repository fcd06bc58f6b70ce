"""A reload never leaves the host without workers, never skips a config, never cuts a transfer
before the drain limit (``GW_DRAIN_TIMEOUT``), and names what it cuts at that limit.

Every test holds an old worker busy across the HUP (a request the upstream never answers, or a
long transfer), because that is when gunicorn's own reload blocked its master.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import yaml

from gw.host import rundir
from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.upstream import Upstream, wait_for

Start = Callable[..., GatewayProcess]
MIB = 1 << 20
BLOCK = bytes(range(256)) * 4096  # 1 MiB
WORKER_CLASSES = [
    "gw.edge.worker.BalancedGeventWorker",
    "gw.edge.worker.BalancedThreadWorker",
    "sync",
]


def config(upstream: Upstream, *paths: str) -> dict[str, Any]:
    return {
        "server": {"max_body_bytes": 64 * MIB},
        "upstreams": {"svc": {"targets": [upstream.url], "read_timeout": 20}},
        "routes": [{"path": p, "upstream": "svc"} for p in paths],
    }


def status(gw: GatewayProcess, path: str) -> int:
    return requests.get(gw.url + path, timeout=5).status_code


def hold_a_worker(gw: GatewayProcess, upstream: Upstream) -> threading.Thread:
    """Start a request that the upstream never answers (until ``upstream.stop_event``)."""
    before = upstream.count()

    def hang() -> None:
        with contextlib.suppress(requests.RequestException):
            requests.get(f"{gw.url}/a/__hang", timeout=30)

    thread = threading.Thread(target=hang, daemon=True)
    thread.start()
    assert wait_for(lambda: upstream.count() > before, timeout=10)
    return thread


def release(upstream: Upstream, held: threading.Thread) -> None:
    upstream.stop_event.set()  # the hanging request ends: the old worker can leave
    held.join(timeout=15)


class Callers:
    """Two clients sending GETs on new connections until stopped (30 s at most)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.timeouts: list[float] = []
        self.other_failures: list[str] = []
        self.ok = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(2)]

    def __enter__(self) -> Callers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def _run(self) -> None:
        deadline = time.monotonic() + 30
        while not self._stop.is_set() and time.monotonic() < deadline:
            sent = time.monotonic()
            try:
                requests.get(self.url, timeout=5, headers={"Connection": "close"})
                self.ok += 1
            except requests.Timeout:
                self.timeouts.append(round(sent, 1))
            except requests.RequestException as ex:  # in flight on a worker we SIGKILLed
                self.other_failures.append(type(ex).__name__)
                time.sleep(0.05)


def test_new_workers_that_die_during_a_drain_are_replaced_at_once(
    gateway: Start, upstream: Upstream
) -> None:
    gw = gateway(
        config(upstream, "/a/**"),
        extra_env={"GW_GRACEFUL_TIMEOUT": "15", "GW_DRAIN_TIMEOUT": "30"},
    )
    held = hold_a_worker(gw, upstream)
    old = set(gw.worker_pids())
    gw.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: len(set(gw.worker_pids()) - old) == 2, timeout=10)
    with Callers(f"{gw.url}/a/x") as callers:
        for _ in range(3):  # the new generation dies (OOM, crash) while an old worker drains
            time.sleep(2.5)
            for pid in set(gw.worker_pids()) - old:
                os.kill(pid, signal.SIGKILL)
        time.sleep(4)
    release(upstream, held)
    assert callers.timeouts == [], f"{len(callers.timeouts)} requests timed out, {callers.ok} ok"
    assert callers.ok > 20
    assert gw.proc.poll() is None


def test_each_hup_is_checked_and_reported_when_it_arrives(
    gateway: Start, upstream: Upstream
) -> None:
    gw = gateway(config(upstream, "/a/**"), workers=1, extra_env={"GW_GRACEFUL_TIMEOUT": "15"})
    held = hold_a_worker(gw, upstream)
    broken = config(upstream, "/a/**")
    broken["routes"][0]["upstream"] = "nope"
    versions = [config(upstream, "/a/**", "/b/**"), broken, config(upstream, "/a/**", "/c/**")]
    reported = [
        lambda: gw.log_text().count("reloaded config") == 1,
        lambda: "routes[0].upstream: no upstream named 'nope'" in gw.log_text(),
        lambda: gw.log_text().count("reloaded config") == 2,
    ]
    late = []
    for version, was_reported in zip(versions, reported, strict=True):
        gw.config_path.write_text(yaml.safe_dump(version))
        gw.proc.send_signal(signal.SIGHUP)
        if not wait_for(was_reported, timeout=1.5):
            late.append(version["routes"][-1]["path"])
    assert late == [], f"HUPs not reported within 1.5 s: {late}"
    assert f"config error: {gw.config_path}: routes[0].upstream" in gw.log_text()
    assert wait_for(lambda: status(gw, "/c/x") == 200, timeout=10)
    assert status(gw, "/b/x") == 404
    release(upstream, held)


def slow_body(total: int, pause: float) -> Iterator[bytes]:
    for _ in range(total // len(BLOCK)):
        time.sleep(pause)
        yield BLOCK


def download(port: int, size: int, pause: float, request_id: str) -> int:
    """GET ``size`` bytes, reading 1 MiB every ``pause`` seconds; return how many arrived."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    received = 0
    try:
        conn.request("GET", f"/a/__bytes/{size}", headers={"X-Request-Id": request_id})
        response = conn.getresponse()
        while chunk := response.read(MIB):
            received += len(chunk)
            time.sleep(pause)
    except (OSError, http.client.HTTPException):
        pass
    finally:
        conn.close()
    return received


def upload(port: int, size: int, pause: float) -> str:
    """POST ``size`` bytes, 1 MiB every ``pause`` seconds; return the upstream's echo."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("POST", "/a/upload", body=slow_body(size, pause), encode_chunked=True)
        return conn.getresponse().read().decode()
    except (OSError, http.client.HTTPException) as ex:
        return f"failed: {ex!r}"
    finally:
        conn.close()


def run_in_thread(results: dict[str, Any], name: str, fn: Callable[[], Any]) -> threading.Thread:
    thread = threading.Thread(target=lambda: results.__setitem__(name, fn()), daemon=True)
    thread.start()
    return thread


def test_long_transfers_outlive_graceful_timeout_within_the_drain_limit(
    gateway: Start, upstream: Upstream
) -> None:
    size = 40 * MIB
    gw = gateway(
        config(upstream, "/a/**"),
        workers=1,
        extra_env={"GW_GRACEFUL_TIMEOUT": "2", "GW_DRAIN_TIMEOUT": "60"},
    )
    results: dict[str, Any] = {}
    threads = [
        run_in_thread(results, "down", lambda: download(gw.port, size, 0.15, "req-drain-down")),
        run_in_thread(results, "up", lambda: upload(gw.port, size, 0.15)),
    ]
    assert wait_for(lambda: upstream.count() == 1, timeout=10)  # the download has started
    time.sleep(1.0)  # both transfers are under way (each takes about 6 s)
    gw.proc.send_signal(signal.SIGHUP)
    for thread in threads:
        thread.join(timeout=40)
    expected = hashlib.sha256(b"".join(slow_body(size, 0))).hexdigest()
    uploaded = f'"body_len": {size}' in results["up"] and expected in results["up"]
    assert (results["down"], uploaded) == (size, True), results["up"][:200]


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_a_transfer_cut_at_the_drain_limit_is_logged_with_its_request_id(
    gateway: Start, upstream: Upstream, worker_class: str
) -> None:
    gw = gateway(
        config(upstream, "/a/**"),
        workers=1,
        worker_class=worker_class,
        threads=1 if worker_class == "sync" else 4,  # more threads would make it gthread
        extra_env={"GW_GRACEFUL_TIMEOUT": "2", "GW_DRAIN_TIMEOUT": "1"},
    )
    results: dict[str, Any] = {}
    thread = run_in_thread(
        results, "down", lambda: download(gw.port, 40 * MIB, 0.15, "req-cut-at-drain-limit")
    )
    assert wait_for(lambda: upstream.count() == 1, timeout=10)  # an old worker serves it
    gw.proc.send_signal(signal.SIGHUP)
    thread.join(timeout=30)
    assert results["down"] < 40 * MIB
    assert wait_for(lambda: "request req-cut-at-drain-limit cut" in gw.log_text(), timeout=5), (
        gw.log_text()[-3000:]
    )


def test_a_full_stop_cuts_at_graceful_timeout_and_names_what_it_cuts(
    gateway: Start, upstream: Upstream
) -> None:
    gw = gateway(config(upstream, "/a/**"), workers=1, extra_env={"GW_GRACEFUL_TIMEOUT": "2"})
    results: dict[str, Any] = {}
    thread = run_in_thread(
        results, "down", lambda: download(gw.port, 40 * MIB, 0.15, "req-cut-at-stop")
    )
    assert wait_for(lambda: upstream.count() == 1, timeout=10)
    gw.stop()
    thread.join(timeout=30)
    assert results["down"] < 40 * MIB
    assert "request req-cut-at-stop cut" in gw.log_text()


def test_an_invalid_drain_limit_refuses_to_start(upstream: Upstream) -> None:
    with pytest.raises(RuntimeError) as failed:
        started = start_gateway(config(upstream, "/a/**"), extra_env={"GW_DRAIN_TIMEOUT": "soon"})
        started.stop()  # it should not have started
    assert "GW_DRAIN_TIMEOUT: must be a number of seconds above 0, not 'soon'" in str(failed.value)


def private_runtime_dir(gw: GatewayProcess) -> str:
    """The directory the master made under /dev/shm, where its workers open their tables."""
    for pid in gw.worker_pids():
        for fd in os.listdir(f"/proc/{pid}/fd"):
            path = os.readlink(f"/proc/{pid}/fd/{fd}")
            if path.startswith("/dev/shm/gw-"):
                return "/".join(path.split("/")[:4])
    raise AssertionError("no worker has a file open in a private runtime directory")


def test_a_master_that_made_its_runtime_dir_removes_it_at_exit_even_after_a_hup(
    gateway: Start, upstream: Upstream
) -> None:
    gw = gateway(config(upstream, "/a/**"), workers=1, extra_env={"GW_RUNTIME_DIR": ""})
    made = private_runtime_dir(gw)
    old = set(gw.worker_pids())
    gw.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: len(set(gw.worker_pids()) - old) == 1, timeout=10)
    gw.stop()
    assert gw.proc.returncode == 0
    assert not os.path.exists(made), f"{made} left behind"


def test_a_master_that_refuses_to_start_removes_the_runtime_dir_it_made(
    upstream: Upstream,
) -> None:
    # gunicorn runs on_exit only for a master that started; the directory derived from the
    # config's path was made before the config was checked.
    bad = config(upstream, "/a/**")
    bad["routes"][0]["upstream"] = "nowhere"
    gw = start_gateway(bad, workers=1, runtime_dir=False, wait=False)
    assert gw.proc.wait(timeout=20) == 1
    assert "config error" in gw.log_text()
    made = rundir.default_runtime_dir(str(gw.config_path))
    assert not os.path.exists(made), f"{made} left behind"


def test_a_master_whose_main_loop_fails_removes_the_runtime_dir_it_made(
    upstream: Upstream,
) -> None:
    # A worker class that does not load fails in gunicorn's main loop, which exits without
    # on_exit (the demo's "gateway cannot start" check does this).
    gw = start_gateway(
        config(upstream, "/a/**"),
        workers=1,
        runtime_dir=False,
        wait=False,
        worker_class="gw.edge.worker.NoSuchWorker",
    )
    assert gw.proc.wait(timeout=20) != 0
    assert "Unhandled exception in main loop" in gw.log_text()
    made = rundir.default_runtime_dir(str(gw.config_path))
    assert not os.path.exists(made), f"{made} left behind"
