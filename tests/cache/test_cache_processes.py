"""The shared store across real processes: a stampede of misses fills once per host, and a
SIGKILLed filler does not wedge the others.

Every child is a forked process that opens the store itself, as a gunicorn worker does. A
"fetch" appends one byte to a counter file (O_APPEND: atomic across processes) and takes
``FETCH_SECONDS``, like a slow upstream.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

from gw.cache.keys import CacheKey, cache_key
from gw.cache.settings import CacheStoreSettings
from gw.cache.store import ResponseCache

FORK = multiprocessing.get_context("fork")
PROCESSES = 4
THREADS = 4
FETCH_SECONDS = 0.3
KEY = cache_key("orders", "GET", "api.example.com", "/orders", "", {}, ())


def _serve(cache: ResponseCache, key: CacheKey, counter: str) -> bytes:
    """Answer one request the way the pipeline does: lookup, lease, re-lookup, fetch, store."""
    entry = cache.lookup(key)
    if entry is not None:
        return entry.body
    with cache.lead(key):
        entry = cache.lookup(key)
        if entry is not None:
            return entry.body
        fd = os.open(counter, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, b"f")
        os.close(fd)
        time.sleep(FETCH_SECONDS)
        body = b"from upstream"
        cache.store(key, 200, [("Content-Type", "text/plain")], body, ttl=30)
        return body


def _worker(directory: str, counter: str, start_at: float, out: Connection) -> None:
    """One worker process: THREADS threads that all miss KEY at ``start_at``."""
    cache = ResponseCache(CacheStoreSettings(), directory)
    bodies: list[bytes] = []

    def request() -> None:
        time.sleep(max(0.0, start_at - time.monotonic()))
        bodies.append(_serve(cache, KEY, counter))

    threads = [threading.Thread(target=request) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.send(bodies)
    out.close()


def test_a_burst_of_misses_from_every_worker_and_thread_fills_once(tmp_path: Path) -> None:
    directory, counter = str(tmp_path / "cache"), str(tmp_path / "fetches")
    ResponseCache(CacheStoreSettings(), directory).close()
    start_at = time.monotonic() + 0.5
    pipes, children = [], []
    for _ in range(PROCESSES):
        receive, send = FORK.Pipe(duplex=False)
        child = FORK.Process(target=_worker, args=(directory, counter, start_at, send))
        child.start()
        pipes.append(receive)
        children.append(child)
    bodies = [body for pipe in pipes if pipe.poll(20) for body in pipe.recv()]
    for child in children:
        child.join(5)
    assert bodies == [b"from upstream"] * (PROCESSES * THREADS)
    assert Path(counter).read_bytes() == b"f"  # one upstream fetch for 16 concurrent misses


def _hold_lease(directory: str, ready: Connection) -> None:
    """Lead the fill of KEY, say so, then hang as a stuck worker would (until SIGKILL)."""
    cache = ResponseCache(CacheStoreSettings(), directory)
    cache.lead(KEY)
    ready.send("leading")
    time.sleep(60)


def _follow(directory: str, counter: str, out: Connection) -> None:
    """Miss KEY behind the stuck leader; report what was served and how long it took."""
    cache = ResponseCache(CacheStoreSettings(lock_timeout=10), directory)
    started = time.monotonic()
    body = _serve(cache, KEY, counter)
    out.send((body, time.monotonic() - started))


def test_a_sigkilled_filler_does_not_wedge_the_others(tmp_path: Path) -> None:
    directory, counter = str(tmp_path / "cache"), str(tmp_path / "fetches")
    ResponseCache(CacheStoreSettings(), directory).close()
    ready_in, ready_out = FORK.Pipe(duplex=False)
    leader = FORK.Process(target=_hold_lease, args=(directory, ready_out))
    leader.start()
    assert ready_in.poll(10) and ready_in.recv() == "leading"
    results, followers = [], []
    for _ in range(2):
        receive, send = FORK.Pipe(duplex=False)
        follower = FORK.Process(target=_follow, args=(directory, counter, send))
        follower.start()
        results.append(receive)
        followers.append(follower)
    time.sleep(0.3)
    assert not any(pipe.poll(0) for pipe in results)  # both wait for the stuck leader
    os.kill(leader.pid or 0, signal.SIGKILL)
    leader.join(5)
    answers = [pipe.recv() for pipe in results if pipe.poll(10)]
    for follower in followers:
        follower.join(5)
    assert [body for body, _ in answers] == [b"from upstream"] * 2
    assert all(seconds < 5 for _, seconds in answers)  # well before the 10 s lock timeout
    assert Path(counter).read_bytes() == b"f"  # the kernel freed the lock; one of them filled
