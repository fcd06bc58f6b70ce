"""HUP reloads the config with no failed request; an invalid file never reaches a worker."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import requests
import yaml

from tests.support.gateway import GatewayProcess
from tests.support.upstream import Upstream, wait_for

Start = Callable[..., GatewayProcess]


def config(upstream: Upstream, *paths: str) -> dict[str, Any]:
    return {
        "upstreams": {"svc": {"targets": [upstream.url]}},
        "routes": [{"path": p, "upstream": "svc"} for p in paths],
    }


def answers(gw: GatewayProcess, path: str) -> int:
    return requests.get(gw.url + path, timeout=5).status_code


def test_hup_picks_up_a_valid_config(gateway: Start, upstream: Upstream) -> None:
    gw = gateway(config(upstream, "/a/**"))
    assert answers(gw, "/b/x") == 404
    gw.config_path.write_text(yaml.safe_dump(config(upstream, "/a/**", "/b/**")))
    gw.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: answers(gw, "/b/x") == 200, timeout=15)


def test_invalid_config_on_hup_keeps_the_old_one_serving_even_after_worker_crashes(
    gateway: Start, upstream: Upstream
) -> None:
    gw = gateway(config(upstream, "/a/**"))
    broken = config(upstream, "/a/**")
    broken["routes"][0]["upstream"] = "nope"
    gw.config_path.write_text(yaml.safe_dump(broken))
    gw.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "workers keep serving the previous one" in gw.log_text(), timeout=15)
    assert "routes[0].upstream: no upstream named 'nope'" in gw.log_text()
    assert answers(gw, "/a/x") == 200
    # The HUP's own worker turnover first: an old worker may still be on its way out.
    assert wait_for(lambda: len(gw.worker_pids()) == 2, timeout=15)
    for pid in gw.worker_pids():  # replacement workers must not read the broken file
        with contextlib.suppress(ProcessLookupError):  # it ended between pgrep and kill
            os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    assert wait_for(lambda: len(gw.worker_pids()) == 2, timeout=15)
    assert gw.proc.poll() is None
    assert wait_for(lambda: answers(gw, "/a/x") == 200, timeout=15)


class Load:
    """``clients`` threads sending GETs to ``url`` until stopped (60 s at most)."""

    def __init__(self, url: str, clients: int, keep_alive: bool) -> None:
        self.url, self.keep_alive = url, keep_alive
        self.failures: list[str] = []
        self.done = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run) for _ in range(clients)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _run(self) -> None:
        client: Any = requests.Session() if self.keep_alive else requests
        deadline = time.monotonic() + 60
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                status = client.get(self.url, timeout=10).status_code
                if status != 200:
                    self.failures.append(str(status))
            except requests.RequestException as ex:
                self.failures.append(type(ex).__name__)
            with self._lock:
                self.done += 1


def test_three_reloads_under_load_fail_no_request(gateway: Start, upstream: Upstream) -> None:
    gw = gateway(config(upstream, "/a/**"), workers=2, threads=4)
    with Load(f"{gw.url}/a/x", clients=4, keep_alive=True) as load:
        for _ in range(3):
            time.sleep(1.0)
            gw.proc.send_signal(signal.SIGHUP)
        time.sleep(2.0)
    assert gw.log_text().count("reloaded config") == 3
    assert load.done > 100
    assert load.failures == []


def test_a_worker_sigkilled_under_load_fails_only_what_it_was_serving(
    gateway: Start, upstream: Upstream
) -> None:
    gw = gateway(config(upstream, "/a/**"), workers=2, threads=4)
    clients = 4
    with Load(f"{gw.url}/a/x", clients, keep_alive=False) as load:
        time.sleep(1.0)
        os.kill(gw.worker_pids()[0], signal.SIGKILL)
        time.sleep(2.0)
    assert load.done > 100
    # Each client has at most one request in flight, so at most `clients` can have been on
    # the killed worker; every other request succeeds.
    assert len(load.failures) <= clients, load.failures
