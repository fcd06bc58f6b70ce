"""Metric values counted in process memory and published to the worker's files in batches.

prometheus_client's multiprocess value (``MmapedValue``) takes a lock, calls ``getpid()`` (to
notice a fork) and packs the new value into the mmap'd file on every ``inc``: about 12
``getpid`` calls and 7 file writes per proxied request. Here an update only changes the value
in memory and marks it; ``publish()`` writes every marked value to the files:
- by a background publisher every ``PUBLISH_EVERY`` seconds (started by the first publish in
  each process: the worker's ``Metrics`` publishes when it is made), and at exit;
- before this worker answers a scrape (so its own counts are exact in its answer).

PERF: never when a request ends: a worker under load goes idle between many requests, and a
publish there (the tallies folded, the marked values stored) cost about 6 µs per request.

What a scrape sees of another worker is therefore at most ``PUBLISH_EVERY`` old, and a
worker killed with SIGKILL loses at most that much of its counting (a graceful exit loses
nothing). The files, their format and the scrape are prometheus_client's, unchanged.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import values
from prometheus_client.mmap_dict import mmap_key

from gw.host import process

PUBLISH_EVERY = 0.1


class _Shared:
    """The state of all values of this process: files and marked values."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.files: dict[str, Any] = {}
        self.all: list[PublishedValue] = []
        self.marked: set[PublishedValue] = set()
        self.folds: list[Callable[[], None]] = []

    def file(self, prefix: str) -> Any:
        found = self.files.get(prefix)
        if found is None:
            directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
            path = os.path.join(directory, f"{prefix}_{process.pid()}.db")
            found = self.files[prefix] = values.MmapedDict(path)  # type: ignore[attr-defined,no-untyped-call]
        return found

    def after_fork(self) -> None:
        """A child starts its own files with the values they hold (none, in a new worker)."""
        self.lock = threading.Lock()
        self.files.clear()
        self.marked.clear()
        self.folds.clear()  # the parent's tallies: a worker makes its own Metrics
        for value in self.all:
            value.load()


_shared = _Shared()
os.register_at_fork(after_in_child=_shared.after_fork)


class PublishedValue:
    """A metric value kept in memory, written to this process's file by ``publish``.

    The interface prometheus_client's metrics call (``values.ValueClass``).
    """

    _multiprocess = True

    def __init__(
        self,
        typ: str,
        metric_name: str,
        name: str,
        labelnames: Any,
        labelvalues: Any,
        help_text: str,
        multiprocess_mode: str = "",
        **_: Any,
    ) -> None:
        self._prefix = f"{typ}_{multiprocess_mode}" if typ == "gauge" else typ
        self._key = mmap_key(metric_name, name, labelnames, labelvalues, help_text)
        self._value = 0.0
        self._timestamp = 0.0
        with _shared.lock:
            self.load()
            _shared.all.append(self)

    def load(self) -> None:
        """Open this process's file for the value and read what it holds."""
        self._file = _shared.file(self._prefix)
        self._value, self._timestamp = self._file.read_value(self._key)

    def inc(self, amount: float) -> None:
        with _shared.lock:
            self._value += amount
            self._timestamp = 0.0
            _shared.marked.add(self)

    def set(self, value: float, timestamp: float | None = None) -> None:
        with _shared.lock:
            self._value = value
            self._timestamp = timestamp or 0.0
            _shared.marked.add(self)

    def get(self) -> float:
        return self._value

    def set_exemplar(self, exemplar: Any) -> None:
        return  # prometheus_client's multiprocess mode keeps no exemplars either

    def get_exemplar(self) -> None:
        return None

    def write(self) -> None:
        self._file.write_value(self._key, self._value, self._timestamp)


def install() -> None:
    """Make prometheus_client's metrics made from now on use ``PublishedValue``."""
    values.ValueClass = PublishedValue


def before_publish(fold: Callable[[], None]) -> None:
    """Run ``fold`` first at every publish: it adds what was tallied to the values
    (``gw.observe.tally``); it must not publish itself."""
    _shared.folds.append(fold)


def publish() -> None:
    """Write every value changed since the last publish to this process's files."""
    for fold in _shared.folds:
        fold()  # outside the lock: a fold changes values, which takes it
    with _shared.lock:
        marked, _shared.marked = _shared.marked, set()
        for value in marked:
            value.write()
    process.every(PUBLISH_EVERY, publish, "gw-metrics")  # what was marked, and the tallies


atexit.register(publish)
