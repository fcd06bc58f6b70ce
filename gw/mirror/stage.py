"""Send mirrored copies from a bounded per-worker pool, never on the client's path.

The pipeline hands over the request it is about to send (``copy``); the copy leaves from a
pool thread (a greenlet under the gevent worker). The client's answer, its latency and its
errors never depend on the shadow: ``copy`` only samples, checks the body and takes a slot
without waiting; whatever the shadow does happens on the pool, and its answer is read and
thrown away.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from gw.errors import UpstreamError
from gw.mirror.policy import MirrorPolicy
from gw.upstream.client import UpstreamClient, UpstreamRequest

if TYPE_CHECKING:
    from gw.observe.instruments import Metrics

log = logging.getLogger("gw.mirror")

DROPPED = "dropped"  # over the route's max_in_flight
TOO_LARGE = "body_too_large"  # over max_body_bytes, or streamed rather than buffered
SHADOW_SUFFIX = "-shadow"
MAX_DRAIN = 1024 * 1024  # bytes of a shadow's answer read before the connection is dropped


class Mirror:
    """One worker's shadow sender: a slot count per route and a pool made lazily per process."""

    def __init__(
        self,
        clients: Mapping[str, UpstreamClient],
        threads: int,
        deadline: float,
        metrics: Metrics | None = None,
    ) -> None:
        """``threads``: the pool size (the sum of the routes' ``max_in_flight``, so a copy
        that got a slot never waits for a thread); ``deadline``: seconds a copy may take."""
        self.clients = clients
        self.threads = threads
        self.deadline = deadline
        self.metrics = metrics
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pid = -1
        self._in_flight: dict[str, int] = {}

    def copy(
        self, route: str, policy: MirrorPolicy, host: str | None, sent: UpstreamRequest
    ) -> None:
        """Copy ``sent`` (the request for the route's upstream) to the shadow, maybe.

        ``host``: the client's Host, used when the shadow upstream preserves it. Never raises
        for the shadow's sake and never waits: the copy is dropped (and counted) when the
        route already has ``max_in_flight`` copies out.
        """
        if not policy.sampled():
            return
        body = sent.body
        if body is not None and not (
            isinstance(body, bytes) and len(body) <= policy.max_body_bytes
        ):
            self._count(route, policy.upstream, TOO_LARGE)
            return
        pool = self._executor()
        if not self._take(route, policy.max_in_flight):
            self._count(route, policy.upstream, DROPPED)
            return
        shadow = self._shadow_request(policy, host, sent, body)
        try:
            pool.submit(self._send, route, policy.upstream, shadow)
        except RuntimeError:  # the pool is shutting down with the worker
            self._give(route)
            self._count(route, policy.upstream, DROPPED)

    def _shadow_request(
        self, policy: MirrorPolicy, host: str | None, sent: UpstreamRequest, body: bytes | None
    ) -> UpstreamRequest:
        """The same method, path, headers and body, marked as a copy in its Host."""
        spec = self.clients[policy.upstream].spec
        named = host if spec.preserve_host and host else spec.targets[0].netloc
        # APPSEC: the headers are gw's own output for the route's upstream (client copies of
        # gw-owned headers already dropped, identity headers set by gw): the shadow is trusted
        # with the same identity as the upstream it shadows.
        headers = {n: v for n, v in sent.headers.items() if n.lower() != "host"}
        headers["Host"] = shadow_host(named)
        started = time.monotonic()
        return UpstreamRequest(
            sent.method,
            policy.path(sent.path),
            headers,
            body,
            deadline=started + self.deadline,
            body_deadline=started + self.deadline,
        )

    def _send(self, route: str, upstream: str, shadow: UpstreamRequest) -> None:
        """Send one copy, read its answer to the end (or MAX_DRAIN) and discard it."""
        started = time.monotonic()
        try:
            response = self.clients[upstream].send(shadow)
            drained = 0
            for chunk in response.body():
                drained += len(chunk)
                if drained > MAX_DRAIN:
                    response.abandon()
                    break
            outcome = f"{response.status // 100}xx"
        except UpstreamError as ex:
            outcome = ex.code
        except Exception:
            log.exception("mirroring a request of route %s to %s failed", route, upstream)
            outcome = "internal_error"
        finally:
            self._give(route)
        self._count(route, upstream, outcome, time.monotonic() - started)

    def _take(self, route: str, limit: int) -> bool:
        with self._lock:
            count = self._in_flight.get(route, 0)
            if count >= limit:
                return False
            self._in_flight[route] = count + 1
            return True

    def _give(self, route: str) -> None:
        with self._lock:
            self._in_flight[route] -= 1

    def _count(self, route: str, upstream: str, outcome: str, seconds: float | None = None) -> None:
        if self.metrics is not None:
            self.metrics.mirror(route, upstream, outcome, seconds)

    def _executor(self) -> ThreadPoolExecutor:
        pid = os.getpid()
        if self._pid != pid:  # PERF: no lock once the pool exists in this process
            with self._lock:
                if self._pid != pid:
                    self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="gw-mirror")
                    self._in_flight = {}
                    self._pid = pid
        assert self._pool is not None
        return self._pool


def shadow_host(host: str) -> str:
    """``orders:8080`` -> ``orders-shadow:8080`` (Envoy's marker: before the port)."""
    name, colon, port = host.rpartition(":")
    if not colon or not port.isdigit() or name.endswith(":"):
        return host + SHADOW_SUFFIX  # no port (or a bare IPv6 address)
    return f"{name}{SHADOW_SUFFIX}:{port}"
