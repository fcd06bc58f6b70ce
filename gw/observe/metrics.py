"""Prometheus metrics that add up across gunicorn workers: the settings and the master's side.

Multiprocess mode is chosen by prometheus_client when it is first imported, from
``PROMETHEUS_MULTIPROC_DIR``: every metric then writes to a per-process mmap file in that
directory, and a scrape merges every file, those of dead workers included (counters and
histograms keep their counts; ``live*`` gauges of a dead worker are removed by
``worker_exited``). Hence the order, which this module relies on:

1. the gunicorn master calls ``prepare_master()`` in ``on_starting`` (after
   ``gw.master.prepare()``): the directory is made and wiped, and the variable is set in
   ``os.environ`` before anything imports prometheus_client, so forked workers inherit it;
2. each worker builds its instruments after the fork (``gw.observe.instruments``);
3. the master calls ``worker_exited(pid)`` from ``child_exit``.

This module imports prometheus_client only inside functions, so the master (which imports
``gw.observe.metrics`` for ``MetricsSettings`` when it checks the config) owns no metric files.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import sys
from collections.abc import Iterator
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gw.core.forwarding import PeerList, parse_networks
from gw.host import rundir

log = logging.getLogger("gw")

ENV = "PROMETHEUS_MULTIPROC_DIR"
_LEGACY_ENV = "prometheus_multiproc_dir"  # the name prometheus_client < 0.10 read
SUBDIR = "metrics"
# prometheus_client names its files <type>[_<gauge mode>]_<pid>.db; nothing else is wiped.
_FILE_PATTERNS = ("counter_*.db", "gauge_*.db", "histogram_*.db", "summary_*.db")


class MetricsSettings(BaseModel):
    """The ``metrics:`` block: whether and where the gateway answers scrapes, and to whom."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    path: str = Field(default="/metrics", pattern=r"^/[A-Za-z0-9._~/-]*$")
    # APPSEC: 'unix' is not in the default. Behind the nginx drop-in every public request
    # arrives on the unix socket, so a unix peer proves nothing about who is asking.
    allow_from: list[str] = Field(
        default=["127.0.0.1/32", "::1/128"],
        description="Direct peers that may scrape: CIDR networks, or 'unix' for peers on a "
        "unix socket. Anyone else gets 404. X-Forwarded-For is never consulted. Behind nginx "
        "on a unix socket, list 'unix' only if nginx refuses the metrics path to the public; "
        "otherwise scrape a loopback TCP bind (GW_BIND=unix:/run/gw/gw.sock,127.0.0.1:9180).",
    )

    @field_validator("allow_from")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        parse_networks(value)
        return value

    def allows(self, remote_addr: str) -> bool:
        """Whether the direct peer (``REMOTE_ADDR``; ``''`` for a unix socket) may scrape.

        Warning:
            Pass the socket peer, never a client address resolved from X-Forwarded-For:
            behind nginx every request comes from the proxy, and scrapes must not be
            reachable through it.
        """
        # APPSEC: trust is decided on the socket peer only; '' is what gunicorn reports for
        # a unix socket, which only the local proxy (or root) can reach.
        return _peer_list(tuple(self.allow_from)).contains(remote_addr)


# PERF: the networks are parsed once per list, each peer's answer kept (PeerList).
@lru_cache(maxsize=16)
def _peer_list(entries: tuple[str, ...]) -> PeerList:
    return PeerList(entries)


# -- the master's side ------------------------------------------------------------------------


def prepare_master() -> str:
    """Make and wipe the metrics directory; export it to the workers about to be forked.

    Call from gunicorn's ``on_starting``, after ``gw.master.prepare()``. Returns the
    directory.

    Warning:
        The directory must be gw's own: prometheus_client's ``*.db`` files in it are deleted.

    Raises:
        RuntimeError: no directory can be named, or prometheus_client was already imported in
            single-process mode (workers would inherit it and count per process).
    """
    directory = _configured_directory()
    os.makedirs(directory, mode=0o700, exist_ok=True)
    for stale in _metric_files(directory):
        with contextlib.suppress(FileNotFoundError):
            os.remove(stale)
    os.environ[ENV] = directory
    _refuse_single_process_client()
    return directory


def worker_exited(pid: int) -> None:
    """Drop a dead worker's live gauges; fold its counters and histograms into the archive.

    Call from gunicorn's ``child_exit``. Its counts stay part of the totals, in one archive
    file per metric type (``gw.observe.metricfiles.compact``), so files do not pile up.
    """
    directory = os.environ.get(ENV)
    if not directory or not os.path.isdir(directory):
        return
    from prometheus_client import multiprocess

    from gw.observe.metricfiles import compact

    multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
    try:
        compact(directory, pid)
    except OSError as ex:
        log.error("metrics: could not compact the files of dead workers: %s", ex)


def multiprocess_directory() -> str | None:
    """The directory workers write their metric files to, or None in single-process mode."""
    return os.environ.get(ENV) or os.environ.get(_LEGACY_ENV) or None


def _configured_directory() -> str:
    directory = os.environ.get(ENV) or os.environ.get(_LEGACY_ENV)
    if directory:
        return directory
    runtime = rundir.runtime_dir()
    if not runtime:
        raise RuntimeError("GW_RUNTIME_DIR is not set: call gw.master.prepare() first")
    return os.path.join(runtime, SUBDIR)


def _metric_files(directory: str) -> Iterator[str]:
    for pattern in _FILE_PATTERNS:
        yield from glob.glob(os.path.join(glob.escape(directory), pattern))


def _refuse_single_process_client() -> None:
    values = sys.modules.get("prometheus_client.values")
    if values is not None and values.ValueClass is values.MutexValue:
        raise RuntimeError(
            "prometheus_client was imported before prepare_master(): workers would count "
            "per process. Call prepare_master() first in on_starting."
        )
