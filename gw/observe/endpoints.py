"""The answers gw gives itself: health, readiness and the Prometheus scrape."""

from __future__ import annotations

import json
import time

from gw.core.request import Request
from gw.errors import RouteNotFound
from gw.observe.instruments import Metrics
from gw.observe.metrics import MetricsSettings

JSON = "application/json"
Answer = tuple[int, str, bytes]  # status, Content-Type, body


class Endpoints:
    """Health and ready paths, and the metrics path (``metrics_port``: the port of the
    ``GW_METRICS_BIND`` listener, which serves metrics, health and ready, and nothing else)."""

    def __init__(
        self,
        health_path: str,
        ready_path: str,
        routes: int,
        version: str,
        metrics: Metrics | None,
        settings: MetricsSettings,
        metrics_port: str | None,
    ) -> None:
        self.health_path = health_path
        self.ready_path = ready_path
        self.routes = routes
        self.version = version
        self.metrics = metrics
        self.settings = settings
        self.metrics_port = metrics_port
        self._paths = frozenset({health_path, ready_path, settings.path})

    def answer(self, request: Request) -> Answer | None:
        """gw's own answer to ``request``, or None when it is not one of these paths.

        Raises:
            RouteNotFound: a scrape from a peer ``metrics.allow_from`` does not list, or any
                other path on the metrics listener.
        """
        if request.path not in self._paths and request.port != self.metrics_port:
            return None  # PERF: nearly every request, in two tests
        on_metrics_listener = self.metrics_port is not None and request.port == self.metrics_port
        scrape = self.metrics is not None and request.path == self.settings.path
        if scrape and (self.metrics_port is None or on_metrics_listener):
            return self._scrape(request)
        if request.path == self.health_path:
            return self._health()
        if request.path == self.ready_path:
            return _json({"status": "ready", "routes": self.routes})
        if on_metrics_listener:
            raise RouteNotFound("the metrics listener serves only metrics, health and ready")
        return None

    def _scrape(self, request: Request) -> Answer:
        """Answer a Prometheus scrape, but only to the peers ``metrics.allow_from`` lists."""
        assert self.metrics is not None
        # APPSEC: the direct socket peer decides, never X-Forwarded-For: behind nginx every
        # public request arrives from nginx, so a forwarded address would prove nothing.
        if not self.settings.allows(request.peer):
            raise RouteNotFound("no route matches this path")
        content_type, body = self.metrics.render(request.headers.by_name)
        return 200, content_type, body

    def _health(self) -> Answer:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return _json({"status": "healthy", "timestamp": now, "version": self.version})


def _json(payload: dict[str, object]) -> Answer:
    return 200, JSON, json.dumps(payload).encode()
