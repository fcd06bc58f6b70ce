"""One worker's Prometheus instruments and the collectors read at scrape time.

Each worker makes its ``Metrics`` after the fork (``worker_metrics()``); in multiprocess mode
(``gw.observe.metrics``) they write to that worker's files and a scrape merges every worker's.
Like ``gw.observe.metrics``, this module imports prometheus_client only inside functions.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from gw.core.exchange import Exchange
from gw.host import process
from gw.observe import batches
from gw.observe.metrics import multiprocess_directory
from gw.observe.tally import Counts, Tally, add_to_histogram

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

log = logging.getLogger("gw")

# 1 ms .. 30 s: a fast hop is a few ms, and 30 s is past every timeout a route may set.
DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
NO_ROUTE = "(none)"  # route label when nothing matched: no route name can be spelled this way
BREAKER_STATES = ("closed", "open", "half_open")
RETRY_OUTCOMES = frozenset({"attempted", "budget_exhausted"})
UPSTREAM_VIAS = frozenset({"proxy", "aggregate"})
RATELIMIT_DECISIONS = frozenset({"allowed", "rejected", "failed_open", "failed_closed"})
IDEMPOTENCY_OUTCOMES = frozenset(
    {"stored", "replayed", "conflict", "waited", "in_flight", "unstored", "unavailable"}
)
INTROSPECTION_OUTCOMES = frozenset({"active", "inactive", "unavailable"})
INTROSPECTION_ANSWERS = frozenset({"active", "inactive"})
JWKS_OUTCOMES = frozenset({"ok", "failed"})
CACHE_RESULTS = frozenset({"hit", "miss", "bypass"})
RATELIMIT_MODES = frozenset({"enforce", "shadow"})
AUTH_SHADOW_DECISIONS = frozenset({"would_allow", "would_reject"})
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})
_STATUS_CLASSES = ("other", "1xx", "2xx", "3xx", "4xx", "5xx")

TableStats = Callable[[], Mapping[str, Any]]


class Metrics:
    """One worker's instruments: small calls for the pipeline, label children cached.

    Label values are route names, upstream names, status classes and fixed words, never
    anything a client spelled (an unknown method is counted as ``OTHER``).

    Warning:
        In multiprocess mode make one per process (``worker_metrics()``): two instances in
        one process write the same keys of the same file and overwrite each other's counts.
    """

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values

        # The mode prometheus_client chose when it was imported, whatever the environment
        # says now: a process that imported it before the variable was set counts alone.
        shared = values.ValueClass is not values.MutexValue
        self.directory = multiprocess_directory() if shared else None
        self._file_lost = False
        # Single-process mode has no files: nothing to publish.
        self._publish_now: Callable[[], None] = _nothing
        if self.directory:
            from gw.observe import metricfiles, published

            metricfiles.allocate_files()  # a full directory fails a create, never a store
            published.install()  # PERF: counted in memory, written in batches (see there)
            self._publish_now = published.publish
        self._registry = CollectorRegistry()
        # In multiprocess mode the files are the registry; scrapes read them afresh.
        reg = None if self.directory else self._registry
        self._requests = Counter(
            "gw_requests_total",
            "Requests answered, by route, method and status class.",
            ["route", "method", "status_class"],
            registry=reg,
        )
        self._duration = Histogram(
            "gw_request_duration_seconds",
            "Time from the request's arrival to the end of its response, by route.",
            ["route"],
            buckets=DURATION_BUCKETS,
            registry=reg,
        )
        # via: "proxy" (a proxied request) or "aggregate" (a part of an aggregate route).
        self._upstream = Histogram(
            "gw_upstream_duration_seconds",
            "Time until an upstream's response headers arrived, by upstream and via.",
            ["upstream", "via"],
            buckets=DURATION_BUCKETS,
            registry=reg,
        )
        self._upstream_errors = Counter(
            "gw_upstream_errors_total",
            "Upstream failures, by upstream, gateway error code and via.",
            ["upstream", "kind", "via"],
            registry=reg,
        )
        self._retries = Counter(
            "gw_upstream_retries_total",
            "Retries made (attempted) or refused by the retry budget (budget_exhausted).",
            ["upstream", "outcome"],
            registry=reg,
        )
        self._ratelimit = Counter(
            "gw_ratelimit_decisions_total",
            "Rate-limit decisions, by policy, decision and mode (enforce, or shadow: the "
            "limit never refuses, 'rejected' means it would have).",
            ["policy", "decision", "mode"],
            registry=reg,
        )
        self._auth_shadow = Counter(
            "gw_auth_shadow_decisions_total",
            "What routes with auth mode: shadow would have done (they never refuse), by route, "
            "decision and reason (the auth failure's reason code; empty when allowed).",
            ["route", "decision", "reason"],
            registry=reg,
        )
        # outcome: the shadow's status class, a gateway error code (upstream_timeout...),
        # dropped (over the route's max_in_flight) or body_too_large (not copied).
        self._mirror = Counter(
            "gw_mirror_requests_total",
            "Mirrored (shadow) copies of requests, by route, shadow upstream and outcome.",
            ["route", "upstream", "outcome"],
            registry=reg,
        )
        self._mirror_duration = Histogram(
            "gw_mirror_duration_seconds",
            "Time a shadow upstream took to answer a copy, body read, by upstream.",
            ["upstream"],
            buckets=DURATION_BUCKETS,
            registry=reg,
        )
        self._idempotency = Counter(
            "gw_idempotency_total",
            "Keyed requests, by route and outcome: stored, replayed, conflict (422), waited "
            "(for a duplicate in flight), in_flight (409), unstored, unavailable (store down).",
            ["route", "outcome"],
            registry=reg,
        )
        # issuer: the issuer's name in the config (bounded); uri: a configured key-set or
        # discovery URL. Provider calls only; cache hits are counted apart.
        self._introspection = Counter(
            "gw_introspection_requests_total",
            "Token introspection calls to the provider, by issuer and outcome.",
            ["issuer", "outcome"],
            registry=reg,
        )
        self._introspection_seconds = Histogram(
            "gw_introspection_seconds",
            "Time a token introspection call took, by issuer.",
            ["issuer"],
            buckets=DURATION_BUCKETS,
            registry=reg,
        )
        self._introspection_hits = Counter(
            "gw_introspection_cache_hits_total",
            "Introspection answers reused from the worker's cache, by issuer and answer.",
            ["issuer", "answer"],
            registry=reg,
        )
        self._jwks = Counter(
            "gw_jwks_fetches_total",
            "Key-set fetches (with discovery: document and key set), by URI and outcome.",
            ["uri", "outcome"],
            registry=reg,
        )
        self._cache = Counter(
            "gw_cache_lookups_total",
            "Cacheable-route answers, by route and result (hit, miss or bypass).",
            ["route", "result"],
            registry=reg,
        )
        self._jwks_fetched = Gauge(
            "gw_jwks_last_success_timestamp_seconds",
            "Unix time of the newest successful key-set fetch by a live worker, by JWKS URI.",
            ["uri"],
            multiprocess_mode="livemax",
            registry=reg,
        )
        # One per process: its increase beyond the worker count is workers dying and
        # being replaced (a reload replaces each worker once).
        self._recorded(
            lambda: Counter(
                "gw_worker_starts_total", "Worker processes started (after the fork).", registry=reg
            )
        ).inc()
        self._recorded(
            lambda: Gauge(
                "gw_workers", "Live worker processes.", multiprocess_mode="livesum", registry=reg
            )
        ).inc()
        self._inflight = self._recorded(
            lambda: Gauge(
                "gw_requests_in_flight",
                "Requests being served by the live workers.",
                multiprocess_mode="livesum",
                registry=reg,
            )
        )
        self._tunnels = self._recorded(
            lambda: Gauge(
                "gw_tunnels_open",
                "Upgrade tunnels (WebSocket) open in the live workers.",
                multiprocess_mode="livesum",
                registry=reg,
            )
        )
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._children: dict[tuple[object, ...], Any] = {}
        # The per-request series, tallied between publishes (gw.observe.tally).
        self._requests_tally: Tally[tuple[str, str, int]] = Tally(DURATION_BUCKETS)
        self._upstream_tally: Tally[tuple[str, str]] = Tally(DURATION_BUCKETS)
        self._counts: Counts[tuple[Any, ...]] = Counts()  # (metric, *labels) of the counters
        # Rate-limit decisions by (policy, decision, mode): ``count_ratelimit`` is the deque's
        # own append, so gw.limits.admission counts with no Python frame (PERF). Its labels
        # are gw's own words, checked where they are written (tests/unit/test_admission.py).
        self._ratelimit_counts: Counts[tuple[str, str, str]] = Counts()
        self.count_ratelimit: Callable[[tuple[str, str, str]], None] = self._ratelimit_counts.add
        self._count_inflight: Callable[[], int] = _none_counted
        self._inflight_published = 0
        if self.directory:
            from gw.observe import published

            published.before_publish(self._fold)
        # the requests' own counts, in batches; a forked worker makes its own Metrics
        batches.consume("metrics", self.finished, this_process_only=True)
        self._table_stats: TableStats | None = None
        self._health_snapshot: Callable[[], list[dict[str, Any]]] | None = None
        self.publish()  # the start is seen by scrapes before any request is served

    # -- per request ---------------------------------------------------------------------

    def finished(self, batch: list[Exchange]) -> None:
        """Count a batch of finished requests (``gw.observe.batches``): each by route, method
        and status class, with its duration, and a proxied one's upstream time (``upstream``).
        """
        # PERF: grouped by key in one pass over the batch (in C where built: _grouped); the
        # tallies take the groups as they are.
        requests, upstreams = _grouped(batch)
        self._requests_tally.extend(requests)
        if upstreams:
            self._upstream_tally.extend(upstreams)

    def publish(self) -> None:
        """Write this worker's counts to its files now."""
        self._publish_now()

    def tunnels(self, delta: int) -> None:
        """Add ``delta`` (+1 when a tunnel opens, -1 when it closes); published at once."""
        self._tunnels.inc(delta)
        self.publish()  # a tunnel outlives any request: seen at once

    def upstream(self, upstream: str, seconds: float, via: str = "proxy") -> None:
        """Observe how long ``upstream`` took to send its response headers.

        ``via`` is ``proxy`` for a proxied request, ``aggregate`` for an aggregate's part (the
        pipeline's proxied requests are observed from their batch: ``finished``).
        """
        _check(via, UPSTREAM_VIAS)
        self._upstream_tally.add((upstream, via), seconds)

    def upstream_error(self, upstream: str, kind: str, via: str = "proxy") -> None:
        """Count a failure of ``upstream``; ``kind`` is the gateway error code."""
        _check(via, UPSTREAM_VIAS)
        self._child(self._upstream_errors, upstream, kind, via).inc()

    def retry(self, upstream: str, outcome: str) -> None:
        """Count a retry ``attempted``, or one the budget refused (``budget_exhausted``)."""
        _check(outcome, RETRY_OUTCOMES)
        self._child(self._retries, upstream, outcome).inc()

    def ratelimit(self, policy: str, decision: str, mode: str = "enforce") -> None:
        """Count a decision: allowed, rejected, failed_open or failed_closed, of an enforced
        limit or of a shadow one (``mode``); ``count_ratelimit`` without the checks."""
        _check(decision, RATELIMIT_DECISIONS)
        _check(mode, RATELIMIT_MODES)
        self.count_ratelimit((policy, decision, mode))

    def auth_shadow(self, route: str, decision: str, reason: str) -> None:
        """Count what a shadow auth policy would have done: would_allow or would_reject.

        ``reason`` is gw's own reason code (``expired``, ``unknown_kid``, ...), never
        anything a client spelled.
        """
        _check(decision, AUTH_SHADOW_DECISIONS)
        self._child(self._auth_shadow, route, decision, reason).inc()

    def mirror(self, route: str, upstream: str, outcome: str, seconds: float | None) -> None:
        """Count a mirrored copy's ``outcome``; observe ``seconds`` for one that was sent."""
        self._child(self._mirror, route, upstream, outcome).inc()
        if seconds is not None:
            self._child(self._mirror_duration, upstream).observe(seconds)

    def idempotency(self, route: str, outcome: str) -> None:
        """Count one keyed request's outcome (``IDEMPOTENCY_OUTCOMES``)."""
        _check(outcome, IDEMPOTENCY_OUTCOMES)
        self._child(self._idempotency, route, outcome).inc()

    def introspection(self, issuer: str, outcome: str, seconds: float) -> None:
        """Count one introspection call (active, inactive or unavailable) and its time."""
        _check(outcome, INTROSPECTION_OUTCOMES)
        self._child(self._introspection, issuer, outcome).inc()
        self._child(self._introspection_seconds, issuer).observe(seconds)

    def introspection_cache_hit(self, issuer: str, answer: str) -> None:
        """Count an introspection answer reused from the cache (active or inactive)."""
        _check(answer, INTROSPECTION_ANSWERS)
        self._child(self._introspection_hits, issuer, answer).inc()

    def jwks_fetch(self, uri: str, outcome: str) -> None:
        """Count one key-set fetch (``ok`` or ``failed``)."""
        _check(outcome, JWKS_OUTCOMES)
        self._child(self._jwks, uri, outcome).inc()
        if outcome == "ok":
            self._child(self._jwks_fetched, uri).set(time.time())

    def cache(self, route: str, result: str) -> None:
        """Count a cacheable route's answer: hit, miss or bypass (its ``X-Cache``)."""
        _check(result, CACHE_RESULTS)
        self._counts.add((self._cache, route, result))

    def watch_health(self, snapshot: Callable[[], list[dict[str, Any]]]) -> None:
        """Report breaker and target states from the host's shared health table at each scrape.

        The state is shared by every worker (gw/health/table.py), so the worker answering the
        scrape reads it for all; nothing is written per request.
        """
        first = self._health_snapshot is None
        self._health_snapshot = snapshot
        if first and not self.directory:
            self._registry.register(_HealthCollector(self))

    def watch_inflight(self, count: Callable[[], int]) -> None:
        """Report ``count()``, the requests this worker is serving, as the in-flight gauge.

        PERF: read when the worker publishes, not counted per request (the pipeline keeps a
        registry of the requests it serves anyway, ``gw.edge.inflight``).
        """
        self._count_inflight = count

    def watch_limiter_table(self, stats: TableStats) -> None:
        """Report the shared rate-limit table's occupancy at each scrape.

        ``stats`` returns a mapping with ``used``, ``slots`` and ``table_full`` (what
        ``SharedTable.stats`` returns). It is called by ``render``, not per request: the table
        is shared by the host's workers, so the worker answering the scrape reads it for all.
        """
        first = self._table_stats is None
        self._table_stats = stats
        if first and not self.directory:
            self._registry.register(_TableCollector(self))

    # -- scrape --------------------------------------------------------------------------

    def render(self, request: Mapping[str, Any]) -> tuple[str, bytes]:
        """Return ``(content_type, body)`` for a scrape, every worker's counts merged.

        ``request`` is a WSGI environ (``HTTP_ACCEPT``) or a header mapping (``Accept``);
        OpenMetrics is answered when the scraper asks for it.
        """
        from prometheus_client.exposition import choose_encoder

        accept = request.get("HTTP_ACCEPT") or request.get("Accept") or request.get("accept")
        encoder, content_type = choose_encoder(str(accept or ""))
        if not self.directory:
            self._fold()
            return content_type, encoder(self._registry)
        from gw.observe.metricfiles import scrape_lock
        from gw.observe.published import publish

        publish()  # this worker's own counts are exact in its answer
        with scrape_lock(self.directory):  # the master never compacts files while we read
            return content_type, encoder(self._scrape_registry())

    def _scrape_registry(self) -> CollectorRegistry:
        if not self.directory:
            return self._registry
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        # The documented way: a fresh registry per scrape that reads every worker's files.
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.directory)  # type: ignore[no-untyped-call]
        if self._table_stats is not None:
            registry.register(_TableCollector(self))
        if self._health_snapshot is not None:
            registry.register(_HealthCollector(self))
        return registry

    # -- helpers -------------------------------------------------------------------------

    def _fold(self) -> None:
        """Add what the tallies and counts took since the last fold to the metric children,
        and set the in-flight gauge (at the start of every publish, and before a
        single-process scrape), the requests finished until now among them."""
        batches.flush()
        for key, row in self._requests_tally.take().items():
            counter, duration = self._request_children.get(key) or self._request_pair(*key)
            counter.inc(row[0])
            if duration is not _UNRECORDED:
                add_to_histogram(duration, row)
        for (upstream, via), row in self._upstream_tally.take().items():
            child = self._child(self._upstream, upstream, via)
            if child is not _UNRECORDED:
                add_to_histogram(child, row)
        for (metric, *labels), count in self._counts.take().items():
            self._child(metric, *labels).inc(count)
        for decision, count in self._ratelimit_counts.take().items():
            self._child(self._ratelimit, *decision).inc(count)
        inflight = self._count_inflight()
        if inflight != self._inflight_published:
            self._inflight.set(inflight)
            self._inflight_published = inflight

    def _request_pair(self, route: str, method: str, status_class: int) -> tuple[Any, Any]:
        cls = _STATUS_CLASSES[status_class] if 0 <= status_class < len(_STATUS_CLASSES) else "other"
        pair = (
            self._recorded(lambda: self._requests.labels(route, method, cls)),
            self._recorded(lambda: self._duration.labels(route)),
        )
        if _UNRECORDED not in pair:  # retried on the next request, once there is room
            self._request_children[(route, method, status_class)] = pair
        return pair

    def _child(self, metric: Any, *labels: str) -> Any:
        """Return ``metric.labels(*labels)``, cached per metric and labels."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            # Two gthread threads may both miss: .labels() is locked and returns one child.
            child = self._recorded(lambda: metric.labels(*labels))
            if child is not _UNRECORDED:
                self._children[key] = child
        return child

    def _recorded(self, make: Callable[[], Any]) -> Any:
        """Return ``make()``, a metric or child backed by this worker's file; when the file
        cannot be created or grown (a full runtime directory), one that records nothing.

        Stores into a child that exists never fail (its blocks are allocated), so only
        creating one can, and a request is never refused because its metrics cannot be kept.
        """
        try:
            made = make()
        except OSError as ex:
            if not self._file_lost:
                self._file_lost = True
                log.error(
                    "metrics: this worker's metrics file cannot grow (%s); it serves without "
                    "recording new series until there is room",
                    ex.strerror or ex,
                )
            return _UNRECORDED
        if self._file_lost:
            self._file_lost = False
            log.info("metrics: this worker's metrics file can grow again")
        return made

    def _table_families(self) -> list[Metric]:
        """Read the limiter table now and return its gauge and counter families."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        if self._table_stats is None:
            return []
        try:
            stats = self._table_stats()
        except Exception:  # a scrape must not fail because the table could not be read
            log.exception("could not read the rate-limit table for metrics")
            return []
        return [
            GaugeMetricFamily(
                "gw_ratelimit_table_slots", "Slots in the shared table.", stats["slots"]
            ),
            GaugeMetricFamily(
                "gw_ratelimit_table_used_slots", "Slots holding a bucket.", stats["used"]
            ),
            CounterMetricFamily(
                "gw_ratelimit_table_full",
                "New keys refused a slot since the table was made.",
                stats["table_full"],
            ),
        ]


Grouped = tuple[Mapping[tuple[str, str, int], list[float]], Mapping[tuple[str, str], list[float]]]


def _python_grouped(batch: list[Exchange]) -> Grouped:
    """Group a batch of finished requests for ``Metrics.finished``: the durations by route,
    method and status class, the upstream times by upstream (``_grouped.c`` makes the same).

    APPSEC: a method gw does not know is counted as ``OTHER``: a client-chosen word must not
    become a new series.
    """
    requests: defaultdict[tuple[str, str, int], list[float]] = defaultdict(list)
    upstreams: defaultdict[tuple[str, str], list[float]] = defaultdict(list)
    for e in batch:
        method = e.method if e.method in _METHODS else "OTHER"
        requests[e.route or NO_ROUTE, method, e.status // 100].append(e.ended - e.started)
        if e.upstream_seconds is not None and e.upstream is not None:
            upstreams[e.upstream, "proxy"].append(e.upstream_seconds)
    return requests, upstreams


def _compiled_grouped(batch: list[Exchange]) -> Grouped:
    """The grouping made in C, or by the Python form for a batch the C form declines."""
    return _c_grouped(batch, _METHODS, "OTHER", NO_ROUTE, "proxy") or _python_grouped(batch)


# PERF: gw/observe/_grouped.c, about a tenth of the Python form's instructions per request.
# Where gw was installed without a C compiler (setup.py builds it optionally), the Python form.
_grouped: Callable[[list[Exchange]], Grouped]
try:
    from gw.observe._grouped import configure as _configure_grouped
    from gw.observe._grouped import grouped as _c_grouped
except ImportError:
    _grouped = _python_grouped
else:
    _configure_grouped(Exchange)
    _grouped = _compiled_grouped


class _Unrecorded:
    """A metric child that records nothing: what a worker uses when its file is full."""

    def inc(self, amount: float = 1) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass

    def set(self, value: float) -> None:
        pass


_UNRECORDED = _Unrecorded()


class _HealthCollector:
    """A scrape-time collector: breaker and target states from the shared health table."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> list[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        snapshot = self._metrics._health_snapshot
        try:
            rows = snapshot() if snapshot else []
        except Exception:  # a scrape must not fail because the table could not be read
            log.exception("could not read the health table for metrics")
            return []
        breaker = GaugeMetricFamily(
            "gw_circuit_breaker_state",
            "1 for the state the upstream's circuit breaker is in (shared by all workers).",
            labels=["upstream", "state"],
        )
        healthy = GaugeMetricFamily(
            "gw_upstream_target_healthy",
            "1 when the target is in service (not ejected, not down by active checks).",
            labels=["upstream", "target"],
        )
        for row in rows:
            if row["kind"] == "upstream":
                for state in BREAKER_STATES:
                    breaker.add_metric([row["upstream"], state], int(row["breaker"] == state))
            else:
                in_service = row["state"] in ("healthy", "half_open", "probing")
                healthy.add_metric([row["upstream"], row["target"]], int(in_service))
        return [breaker, healthy]


class _TableCollector:
    """A scrape-time collector: the limiter table read by the worker serving the scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> list[Metric]:
        return self._metrics._table_families()


def _check(value: str, allowed: frozenset[str] | tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{value!r} is not one of {sorted(allowed)}")


_process_metrics: tuple[int, Metrics] | None = None
_process_lock = threading.Lock()


def worker_metrics() -> Metrics:
    """Return this process's one ``Metrics``, made on first use (after the fork)."""
    global _process_metrics
    pid = process.pid()
    with _process_lock:
        if _process_metrics is None or _process_metrics[0] != pid:
            _process_metrics = (pid, Metrics())
        return _process_metrics[1]


def ratelimit_totals(directory: str) -> dict[str, dict[str, dict[str, int]]]:
    """Sum the rate-limit decisions in a gateway's metric files (for ``gw limits stats``).

    Returns ``{mode: {policy: {decision: count}}}``, mode ``enforce`` or ``shadow``: every
    worker's counts (dead workers' too) as last published (a worker writes its counts within
    ``gw.observe.published.PUBLISH_EVERY`` of a request).
    """
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    from gw.observe.metricfiles import scrape_lock

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    totals: dict[str, dict[str, dict[str, int]]] = {"enforce": {}, "shadow": {}}
    with scrape_lock(directory):  # as a scrape does: no compaction while the files are read
        families = list(registry.collect())
    for family in families:
        for sample in family.samples:
            if sample.name != "gw_ratelimit_decisions_total":
                continue
            labels = sample.labels
            policies = totals.setdefault(labels.get("mode", "enforce"), {})
            counts = policies.setdefault(labels["policy"], {})
            counts[labels["decision"]] = counts.get(labels["decision"], 0) + int(sample.value)
    return totals


def _nothing() -> None:
    pass


def _none_counted() -> int:
    return 0
