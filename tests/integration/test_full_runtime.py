"""A full GW_RUNTIME_DIR degrades the gateway, it never kills it (issue 13, point 3).

Each test mounts its own small tmpfs (as root), runs a real gunicorn on it, and fills it with
one file until the file system refuses more, so that every block of it is in use.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.upstream import Upstream, wait_for

Start = Callable[..., GatewayProcess]
TMPFS_SIZE = "8m"  # the host tables are allocated in full now: about 3.8 MiB of them
SLOTS = "4096"


@pytest.fixture
def small_tmpfs() -> Iterator[Path]:
    """Mount a private tmpfs under a fresh temporary directory; unmount it by exact path."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    base = Path(tempfile.mkdtemp(prefix="gw-fulltest-"))
    mount_point = base / "tmpfs"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        mount_point.rmdir()
        base.rmdir()
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    yield mount_point
    _unmount(mount_point)
    base.rmdir()


def _unmount(mount_point: Path) -> None:
    """Unmount by exact path, waiting (bounded) for orphaned workers to let go of it."""
    for _ in range(50):
        if subprocess.run(["umount", str(mount_point)], check=False).returncode == 0:
            mount_point.rmdir()
            return
        time.sleep(0.2)
    raise RuntimeError(f"could not unmount {mount_point}")


def fill(mount_point: Path) -> Path:
    """Write one file until no block is left. The running gateway may take blocks meanwhile
    (a file the size that was free once then no longer fits), so write until the file system
    refuses, in ever smaller pieces."""
    filler = mount_point / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for piece in (1 << 20, 1 << 12, 1):
            try:
                while os.write(fd, b"\0" * piece):
                    pass
            except OSError as ex:
                if ex.errno != errno.ENOSPC:
                    raise  # on to smaller pieces only when the file system is full
    finally:
        os.close(fd)
    assert os.statvfs(mount_point).f_bavail == 0
    return filler


def config(upstream: Upstream, on_error: str = "fail_open") -> dict[str, Any]:
    return {
        "upstreams": {"svc": {"targets": [upstream.url]}},
        "routes": [
            {"name": "api", "path": "/api/**", "upstream": "svc"},
            {"name": "pub", "path": "/pub/**", "upstream": "svc", "cache": {"ttl": 30}},
        ],
        "rate_limiting": {
            "default": {"requests_per_minute": 100000, "key": "header:X-User"},
            "on_error": on_error,
        },
    }


def send(gw: GatewayProcess, count: int, first_user: int = 0) -> list[int]:
    """Send ``count`` requests, each from a new user (a new limiter slot, a new page)."""
    session = requests.Session()
    statuses = []
    for i in range(count):
        user = first_user + i
        path = f"/pub/{user}" if i % 4 == 3 else f"/api/{i}"  # a cache fill, or not
        try:
            status = session.get(
                f"{gw.url}{path}", headers={"X-User": f"user-{user}"}, timeout=5
            ).status_code
        except requests.RequestException:
            status = -1
        statuses.append(status)
    return statuses


def sigbus_deaths(gw: GatewayProcess) -> int:
    return gw.log_text().count("was sent SIGBUS")


def test_a_full_runtime_dir_never_kills_a_worker(
    small_tmpfs: Path, upstream: Upstream, gateway: Start
) -> None:
    runtime = small_tmpfs / "run"
    gw = gateway(
        config(upstream),
        workers=2,
        extra_env={"GW_RUNTIME_DIR": str(runtime), "GW_RATELIMIT_SLOTS": SLOTS},
    )
    assert send(gw, 20) == [200] * 20
    filler = fill(small_tmpfs)

    # New users land on limiter pages never touched; new label values grow metrics files.
    during = send(gw, 300, first_user=1000)
    victim = gw.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)  # its replacement boots into the full directory
    assert wait_for(lambda: victim not in gw.worker_pids() and len(gw.worker_pids()) == 2, 15)
    time.sleep(1.0)
    after_kill = send(gw, 100, first_user=5000)
    workers_before_hup = sorted(gw.worker_pids())
    gw.proc.send_signal(signal.SIGHUP)  # a reload that cannot copy the config
    time.sleep(3.0)
    reloaded = send(gw, 50, first_user=7000)

    deaths = sigbus_deaths(gw)
    master = "alive" if gw.proc.poll() is None else "dead"
    assert deaths == 0, f"{deaths} workers died of SIGBUS; master {master}"
    assert master == "alive", gw.log_text()[-3000:]
    assert during.count(200) == len(during), sorted(set(during))
    assert after_kill.count(200) == len(after_kill), sorted(set(after_kill))
    assert reloaded.count(200) == len(reloaded), sorted(set(reloaded))
    assert len(gw.worker_pids()) == 2 and workers_before_hup
    text = gw.log_text()
    assert "Traceback" not in text, text[-3000:]
    # One line per incident and process, not one per request.
    assert text.count("cache store failed") <= text.count("Booting worker"), text[-3000:]
    assert "reload refused" in text

    filler.unlink()
    assert send(gw, 50, first_user=9000) == [200] * 50

    def scraped() -> str:
        scrape = requests.get(f"{gw.url}/metrics", timeout=5)
        assert scrape.status_code == 200
        return scrape.text

    # Each worker publishes its counts within 0.1 s; the scrape may come to the other one.
    wait_for(lambda: "gw_requests_total" in scraped(), 5)
    assert "gw_requests_total" in scraped()
    assert sigbus_deaths(gw) == 0


@pytest.mark.parametrize(
    ("spoil", "reason"), [("full", "No space left on device"), ("ro", "Read-only file system")]
)
def test_start_on_a_full_or_read_only_runtime_dir_refuses_with_one_line(
    small_tmpfs: Path, upstream: Upstream, spoil: str, reason: str
) -> None:
    if spoil == "full":
        fill(small_tmpfs)
    else:
        subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    gw = start_gateway(
        config(upstream),
        workers=1,
        extra_env={"GW_RUNTIME_DIR": str(small_tmpfs / "run"), "GW_RATELIMIT_SLOTS": SLOTS},
        wait=False,
    )
    try:
        gw.proc.wait(timeout=20)
    finally:
        gw.stop()
    text = gw.log_text()
    assert gw.proc.returncode != 0
    assert "Traceback" not in text, text
    refusals = [line for line in text.splitlines() if "runtime directory" in line]
    assert len(refusals) == 1, text
    assert reason in refusals[0], text
