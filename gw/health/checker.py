"""Active health checks, run by one worker per host; every worker sees their results.

Every worker starts an ``ActiveChecker`` (a daemon thread) after the fork. Each one tries to
take an exclusive, non-blocking ``fcntl.lockf`` on ``health.leader`` next to the health
table; the holder runs the checks and writes their results into the shared table, the others
retry every tick. The kernel drops the lock of a leader that dies (even by SIGKILL), so another
worker takes over within a tick. The leader also frees the table rows of dead workers.

A check is a GET of ``path`` (origin-form, sent as is, whatever the target's base path) with
``Connection: close`` on a fresh connection made as the proxy makes its own, and the whole
answer must arrive within ``timeout``; a status in ``expect`` is a success, anything else
(another status, refused, timed out, a TLS failure, not HTTP) a failure.
``unhealthy_threshold`` failures in a row take the target out of service,
``healthy_threshold`` successes in a row put it back. A target counts as up until checks say
otherwise, so a restart does not begin with an outage.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from gw.health import HealthUnavailable
from gw.health.layout import (
    ACTIVE_AT,
    ACTIVE_DOWN,
    ACTIVE_STATUS,
    ACTIVE_STREAK,
    CHECK_ERROR,
    CHECK_REFUSED,
    CHECK_TIMEOUT,
)
from gw.health.state import shared
from gw.health.table import HealthTable
from gw.upstream.connection import fetch_status
from gw.upstream.tls import TlsClient
from gw.upstream.wire import BodyBrokenOff, MalformedResponse

log = logging.getLogger("gw.health")

LEADER_FILE = "health.leader"
MAX_PROBE_THREADS = 8
REAP_EVERY = 2.0
_CHECK_HEADERS = {"User-Agent": "gw-health", "Connection": "close"}

_FILES: dict[str, int] = {}  # leader file -> this process's one descriptor of it
_OWNERS: dict[str, ActiveChecker] = {}  # leader file -> the checker of this process leading
_LEADING_LOCK = threading.Lock()


@dataclass(frozen=True)
class CheckSpec:
    """How to check one target of one upstream."""

    upstream: str
    url: str  # the target's URL: where to connect, and its key in the health table
    path: str = "/health"
    interval: float = 5.0
    timeout: float = 2.0
    healthy_threshold: int = 2
    unhealthy_threshold: int = 3
    expect: tuple[tuple[int, int], ...] = ((200, 399),)  # inclusive status ranges
    tls: TlsClient | None = None  # the upstream's own TLS client (https targets)

    def accepts(self, status: int) -> bool:
        """Tell whether a check that got ``status`` (or a CHECK_* code) succeeded."""
        return any(low <= status <= high for low, high in self.expect)


def probe(spec: CheckSpec) -> int:
    """Send one check; return the status, or CHECK_REFUSED, CHECK_TIMEOUT or CHECK_ERROR.

    APPSEC: a check goes over the proxied requests' transport (``gw.upstream.connection``):
    the same TLS context (trusted CAs, client certificate, name checked and sent as SNI), the
    same request framing and response parser. So a check cannot pass where the requests
    fail, or fail where they pass. Each check makes a fresh connection, closed afterwards:
    it never takes or returns a pooled one, and it measures a connect as nginx's and
    Envoy's active checks do.
    """
    try:
        return fetch_status(spec.url, spec.path, _CHECK_HEADERS, spec.tls, spec.timeout)
    except ConnectionRefusedError:
        return CHECK_REFUSED
    except TimeoutError:
        return CHECK_TIMEOUT
    except (OSError, MalformedResponse, BodyBrokenOff):
        return CHECK_ERROR


def record(table: HealthTable, spec: CheckSpec, status: int) -> str:
    """Write one check result into the table; return "up" or "down" on a change, else ""."""
    slot = table.target(spec.upstream, spec.url)
    words = table.words
    with table.held(slot) as base:
        words[base + ACTIVE_AT] = table.now()
        words[base + ACTIVE_STATUS] = status
        streak = words[base + ACTIVE_STREAK]
        streak = max(streak, 0) + 1 if spec.accepts(status) else min(streak, 0) - 1
        words[base + ACTIVE_STREAK] = streak
        if words[base + ACTIVE_DOWN] and streak >= spec.healthy_threshold:
            words[base + ACTIVE_DOWN] = 0
            return "up"
        if not words[base + ACTIVE_DOWN] and -streak >= spec.unhealthy_threshold:
            words[base + ACTIVE_DOWN] = 1
            return "down"
    return ""


class ActiveChecker:
    """Run ``specs`` from whichever worker of the host holds the leader lock.

    Start one per worker process, after the fork (never in the gunicorn master: it would
    hold the lock and check nothing). With no specs it still frees the rows of dead workers.
    """

    _pid: int
    _path: str  # the leader file, once this checker has led
    _thread: threading.Thread | None
    _pool: ThreadPoolExecutor | None
    _stopping: threading.Event
    _next_check: list[float]  # time.monotonic() when each spec is due
    _next_reap: float

    def __init__(
        self,
        specs: Sequence[CheckSpec],
        *,
        table: Callable[[], HealthTable] = shared,
        leader_path: str | None = None,
    ) -> None:
        self.specs = tuple(specs)
        self._table = table
        self._leader_path = leader_path
        shortest = min((s.interval for s in self.specs), default=2.0)
        self.tick = min(1.0, max(0.05, shortest / 2))
        self._reset()

    @property
    def leading(self) -> bool:
        return self._pid == os.getpid() and _OWNERS.get(self._path) is self

    def start(self) -> None:
        """Start the checking thread in this process (again after a fork; once otherwise)."""
        if self._pid != os.getpid():
            self._reset()
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="gw-health", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and hand the leadership over."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None
        self._resign()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def run_once(self) -> int:
        """Lead if possible and check every target that is due; return how many were checked."""
        if not self._lead():
            return 0
        table = self._table()
        now = time.monotonic()
        if now >= self._next_reap:
            table.reap()
            self._next_reap = now + REAP_EVERY
        due = [i for i, when in enumerate(self._next_check) if when <= now]
        for i, status in zip(due, self._probe_all(due), strict=True):
            self._next_check[i] = now + self.specs[i].interval
            self._report(table, self.specs[i], status)
        return len(due)

    def _reset(self) -> None:
        """Forget any state of another process (this object was copied by a fork)."""
        self._pid = os.getpid()
        self._path = ""
        self._thread = None
        self._pool = None
        self._stopping = threading.Event()
        self._next_check = [0.0] * len(self.specs)
        self._next_reap = 0.0

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.run_once()
            except Exception:  # keep checking: one bad round must not end the thread
                log.exception("active health checks: round failed")
            self._stopping.wait(self.tick)

    def _probe_all(self, due: list[int]) -> list[int]:
        """Check the ``due`` targets in parallel; return their statuses in order."""
        if len(due) <= 1:
            return [probe(self.specs[i]) for i in due]
        if self._pool is None:
            size = min(MAX_PROBE_THREADS, len(self.specs))
            self._pool = ThreadPoolExecutor(size, thread_name_prefix="gw-health-probe")
        return list(self._pool.map(probe, [self.specs[i] for i in due]))

    def _report(self, table: HealthTable, spec: CheckSpec, status: int) -> None:
        try:
            change = record(table, spec, status)
        except HealthUnavailable:
            return  # the next round writes it
        if change:
            log.warning(
                "upstream %s target %s is %s (active check: %s)",
                spec.upstream,
                spec.url,
                change,
                _describe(status),
            )

    def _lead(self) -> bool:
        """Hold the host's leader lock, taking it if it is free; tell whether we hold it."""
        if self.leading:
            return True
        path = self._leader_path or os.path.join(os.path.dirname(self._table().path), LEADER_FILE)
        with _LEADING_LOCK:
            if path in _OWNERS:
                return False  # another checker of this process leads
            fd = _FILES.get(path)
            if fd is None:
                fd = _FILES[path] = _open_leader_file(path)
            if not _try_lock(fd):
                return False
            _OWNERS[path] = self
            # The pid in the file is for operators only: a full runtime directory must not
            # stop the leader from leading.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._path = path
        log.info("leading the active health checks of this host (pid %d)", os.getpid())
        return True

    def _resign(self) -> None:
        if not self.leading:
            return
        with _LEADING_LOCK:
            del _OWNERS[self._path]
            fcntl.lockf(_FILES[self._path], fcntl.LOCK_UN)


def _open_leader_file(path: str) -> int:
    """Open the leader file, once per process.

    APPSEC: record locks belong to the process and closing *any* of its descriptors of the
    file drops them all, so each process keeps one descriptor per leader file, never closed.
    O_NOFOLLOW, and the runtime directory is the gw user's own (0700).
    """
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as ex:
        if ex.errno in (errno.EACCES, errno.EAGAIN):
            return False
        raise
    return True


def _describe(status: int) -> str:
    names = {CHECK_REFUSED: "refused", CHECK_TIMEOUT: "timed out", CHECK_ERROR: "failed"}
    return names.get(status, f"status {status}")


def _forget_after_fork() -> None:
    """A child holds none of its parent's locks."""
    global _LEADING_LOCK
    _OWNERS.clear()
    _LEADING_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
