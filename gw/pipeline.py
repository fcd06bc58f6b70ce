"""The request pipeline: named stages in a fixed order, readable in one method.

``Gateway.handle`` is the whole flow. Ingress turns the WSGI environ into one ``Request``
(``gw.core.request``); every stage after takes ``(request, route)`` and never sees the
environ. Each stage may stop the request by raising a ``GatewayError``, which becomes the one
JSON error shape. Every answer, whatever made it, leaves through one tail (``_respond``). The
pipeline knows nothing of Falcon.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gw import __version__, cors
from gw.auth.stage import AuthStage
from gw.cache.stage import CacheStage
from gw.config.assemble import Config, RouteSpec
from gw.core.body import LimitedBody, request_body
from gw.core.conditions import RequestView, parse_cookies
from gw.core.exchange import ClosingBody, Exchange, Outcome
from gw.core.forwarding import TrustedProxies
from gw.core.headers import (
    GATEWAY_OWNED,
    field_name,
    response_headers,
)
from gw.core.hosts import HostAllowList
from gw.core.ingress import exchange_from, request_from
from gw.core.nearest import describe, nearest
from gw.core.outgoing import upstream_headers
from gw.core.paths import encode_path
from gw.core.request import Request
from gw.core.retry import RetryBudget
from gw.core.routing import RouteMatch, RouteTable
from gw.cors import is_preflight
from gw.edge import inflight
from gw.errors import (
    ClientError,
    GatewayError,
    RouteNotFound,
    UpstreamError,
)
from gw.health import snapshot as health_snapshot
from gw.health.balancer import for_upstream
from gw.host.process import native_lock
from gw.idempotency.stage import IdempotencyStage
from gw.mirror.stage import Mirror
from gw.observe import batches
from gw.observe.endpoints import Answer as LocalAnswer
from gw.observe.endpoints import Endpoints
from gw.observe.instruments import worker_metrics
from gw.shaping.compose import Aggregator
from gw.shaping.parts import PartReport
from gw.shaping.stage import Shaper
from gw.tunnel.stage import TunnelStage
from gw.upstream.client import UpstreamClient, UpstreamRequest, UpstreamResponse
from gw.upstream.pool import Connector

log = logging.getLogger("gw")

_BODILESS = frozenset({204, 304})
_CLOSING = frozenset({400, 408, 413, 501, 505})
_JSON = "application/json"


Check = Callable[[Request, RouteSpec], "Outcome | None"]
"""A stage before the upstream headers: raises to refuse, or answers itself (a preflight)."""
Answer = Callable[[Request, RouteSpec, dict[str, str]], "Outcome | None"]
"""A stage that answers the request, or None to leave it to the next one."""


@dataclass(frozen=True)
class Plan:
    """One route's stages, compiled at start: only those it configures, in pipeline order.

    ``checks`` (address lists, CORS, authentication) run first; then, with ``admits``, the
    rate limits; then the first of ``answers`` that answers (a tunnel, composition, an
    idempotent replay, the cache, and last the plain proxy, which always answers).
    """

    checks: tuple[Check, ...]
    admits: bool
    answers: tuple[Answer, ...]


class Gateway:
    """Everything compiled from one config, serving requests until the next reload."""

    def __init__(
        self, config: Config, metrics_port: str | None = None, connect: Connector | None = None
    ) -> None:
        """``metrics_port``: the port of a listener that serves only the metrics path and the
        health and ready paths (``GW_METRICS_BIND``); the metrics path is then served there
        alone. ``connect``: how upstream connections are made (tests pass a fake transport)."""
        self.config = config
        self.server = config.server
        self.proxies = TrustedProxies(config.server.trusted_proxies)
        hosts = config.server.hosts
        self.hosts = HostAllowList(hosts) if hosts is not None else None
        self.metrics = worker_metrics() if config.metrics.enabled else None
        self.clients = {
            name: UpstreamClient(
                spec,
                for_upstream(spec),
                # PERF: a native lock (gw.host.process): one lock taken on every request
                RetryBudget(spec.budget_ratio, spec.budget_min_per_second, lock=native_lock()),
                self._retry_observer(name),
                connect=connect,
            )
            for name, spec in config.upstreams.items()
        }
        if self.metrics is not None:
            self.metrics.watch_health(health_snapshot.snapshot)
            self.metrics.watch_inflight(inflight.serving)
        if self.metrics is not None and config.admission is not None:
            config.admission.observe = self.metrics.count_ratelimit
            self.metrics.watch_limiter_table(config.admission.table_stats)
        self._composer: Aggregator | None = None
        threads, deadline = config.mirror_threads, config.server.deadline
        self.mirror = Mirror(self.clients, threads, deadline, self.metrics) if threads else None
        self.shaper = Shaper(config.transformer, config.compressor)
        # PERF: the security headers as one list, added whole to the answers that set none of
        # them (nearly all), and their names lower-cased once to tell which those are.
        self._security = list(config.security_headers)
        self._security_names = frozenset(name.lower() for name, _ in self._security)
        self.cache = CacheStage(config.cache_store) if config.cache_store else None
        self.idempotency = self._idempotency_stage(config)
        self.tunnels = TunnelStage(config.tunnels, self.metrics.tunnels if self.metrics else None)
        authenticator = config.authenticator
        shadow = self.metrics.auth_shadow if self.metrics is not None else None
        self.auth = (
            AuthStage(authenticator, config.auth_throttle, shadow) if authenticator else None
        )
        if authenticator is not None and self.metrics is not None:
            authenticator.report_to(self.metrics)
        # APPSEC: every header the gateway sets, identity headers included, is dropped from
        # every client request in every spelling, on every route, authenticated or not.
        owned = authenticator.header_names() if authenticator else frozenset()
        self.owned = GATEWAY_OWNED | owned
        self.endpoints = Endpoints(
            config.server.health_path,
            config.server.ready_path,
            len(config.table.ordered()),
            __version__,
            self.metrics,
            config.metrics,
            metrics_port,
        )
        self.plans = {route.name: self._plan(route.payload) for route in config.table.ordered()}

    def handle(self, environ: Mapping[str, Any]) -> Outcome:
        """Serve one request: ingress, route, forward, respond; egress when the body closes."""
        exchange = exchange_from(environ, self.proxies)
        inflight.started(exchange)
        try:
            request = request_from(exchange, environ, self.owned)
            local = self.endpoints.answer(request)
            if local is not None:
                return self._local_answer(request, local)
            if self.hosts is not None:
                self.hosts.check(request.authority)
            route = self._route(request)
            plan = self.plans[route.name]
            for check in plan.checks:
                early = check(request, route)
                if early is not None:
                    return early
            headers = self._upstream_headers(request, route)
            if plan.admits:
                self._admit(request, route, headers)
            for answer in plan.answers:
                outcome = answer(request, route, headers)
                if outcome is not None:
                    return outcome
            raise AssertionError(f"route {route.name}: no stage answered")  # _plan ends in one
        except GatewayError as ex:
            return self._error(exchange, ex)
        except Exception:
            log.exception("unexpected error serving %s", exchange.request_id)
            failure = GatewayError("the gateway failed to handle this request")
            return self._error(exchange, failure)

    # -- each route's stages, compiled at start ----------------------------------------------

    def _plan(self, route: RouteSpec) -> Plan:
        """The stages ``route`` configures, in pipeline order; no check for what it lacks."""
        checks: list[Check] = []
        if route.addresses is not None:  # before CORS and auth: Kong's ip-restriction
            checks.append(self._addresses)
        if route.cors is not None:
            checks.append(self._cors)
        if self.auth is not None and route.auth.effective_mode != "none":
            checks.append(self._authenticate)
        answers: list[Answer] = []
        if route.upgrade:
            answers.append(self._tunnel)  # only an upgrade handshake: others go on
        if route.aggregate is not None:
            answers.append(self._compose)
        else:
            if route.idempotency is not None:
                answers.append(self._keyed)  # only the keyed methods: others go on
            if route.cache is not None and self.cache is not None:
                answers.append(self._cached)
            answers.append(self._proxied)
        return Plan(tuple(checks), self.config.admission is not None, tuple(answers))

    def _addresses(self, request: Request, route: RouteSpec) -> None:
        assert route.addresses is not None
        route.addresses.check(request.client.ip)

    def _authenticate(self, request: Request, route: RouteSpec) -> None:
        assert self.auth is not None
        self.auth.apply(request, route.auth)

    def _proxied(self, request: Request, route: RouteSpec, headers: dict[str, str]) -> Outcome:
        return self._relay(request, self._forward(request, route, headers))

    # -- stages ------------------------------------------------------------------------------

    def _route(self, request: Request) -> RouteSpec:
        try:
            match = choose_route(self.config.table, request, self.owned)
        except RouteNotFound:
            if log.isEnabledFor(logging.DEBUG):
                _log_nearest(self.config.table, request, self.owned)
            raise
        request.exchange.route = match.route.name
        request.params = match.params
        return match.route.payload

    def _cors(self, request: Request, route: RouteSpec) -> Outcome | None:
        """Answer a preflight here (``gw.cors``); an actual request goes on."""
        if route.cors is None:
            return None
        allowed = cors.apply(route.cors, request)
        return None if allowed is None else self._respond(request.exchange, 204, allowed, [], None)

    def _admit(self, request: Request, route: RouteSpec, headers: Mapping[str, str]) -> None:
        """Draw from every rate limit that applies; 429 before anything reaches the upstream.
        (Only in a plan whose ``admits``: the config has rate limits.)"""
        admission = self.config.admission
        assert admission is not None
        request.exchange.add_headers += admission.admit_request(request, route.name, headers)

    def _forward(
        self, request: Request, route: RouteSpec, headers: dict[str, str], upgrade: bool = False
    ) -> UpstreamResponse:
        """Rewrite the path, stream the body, send through the upstream's pool."""
        assert route.upstream is not None
        client = self.clients[route.upstream]
        exchange = request.exchange
        exchange.upstream = route.upstream
        rewrite = route.rewrite
        path = encode_path(request.path if rewrite.identity else rewrite.apply(request.path))
        if request.query:
            path = f"{path}?{request.query}"
        server = self.server
        limit = server.max_body_bytes if route.max_body_bytes is None else route.max_body_bytes
        body, length = request_body(request, limit, server.min_upload_rate, server.upload_grace)
        sent: LimitedBody | bytes | None = body
        buffer = self.server.request_buffer_bytes
        if body is not None and buffer and (length is None or length <= buffer):
            # APPSEC: a small body is read whole before an upstream connection is taken, so
            # a client that trickles it holds no upstream connection (nginx buffers too).
            whole = body.buffer(buffer)
            if whole is not None:
                sent, length = whole, len(whole)
        if length is not None:
            # APPSEC: the framing sent upstream is gw's own: the validated length of the body
            # gw sends (LimitedBody sends exactly that many bytes or fails), never a header
            # copied from the client.
            headers = {**headers, "Content-Length": str(length)}
        # PERF: the fields in their order, not by keyword (which cost 3,000 instructions more
        # a request); each is named in a comment.
        outgoing = UpstreamRequest(
            request.method,
            path,
            headers,
            sent,  # body
            sent is not None and length is None,  # chunked
            route.read_timeout,
            route.retry or client.spec.retry,  # policy
            exchange.started + self.server.deadline,  # deadline
            exchange.started + (route.stream_timeout or self.server.deadline),  # body_deadline
            None if client.hash_source is None else _balance_key(client, request, headers),
            route.connect_timeout,
            upgrade,
        )
        # A handshake is never mirrored: a shadow that switched would hold a tunnel nobody reads.
        if route.mirror is not None and self.mirror is not None and not upgrade:
            self.mirror.copy(route.name, route.mirror, request.host, outgoing)  # fire and forget
        started = time.monotonic()
        try:
            response = client.send(outgoing)
        except UpstreamError as ex:
            if self.metrics is not None:
                self.metrics.upstream_error(route.upstream, ex.code)
            raise
        exchange.upstream_seconds = time.monotonic() - started  # counted with its batch
        exchange.upstream_target = response.target.url
        return response

    def _compose(self, request: Request, route: RouteSpec, headers: dict[str, str]) -> Outcome:
        """Fan out to the aggregate's parts in parallel and answer one merged document."""
        assert route.aggregate is not None
        exchange = request.exchange
        exchange.upstream = ",".join(dict.fromkeys(p.upstream for p in route.aggregate.parts))
        reports: list[PartReport] = []
        try:
            outcome = self._aggregator().run(
                route.aggregate,
                request.params,
                request.query,
                request.identity,
                headers,
                self.clients,
                observe=self._part_observer(reports),
            )
        finally:
            _log_parts(exchange, list(reports))  # the parts that finished before the answer
        return self._respond(exchange, outcome.status, outcome.headers, outcome.body, request)

    def _cached(self, request: Request, route: RouteSpec, headers: dict[str, str]) -> Outcome:
        """Answer from the cache, or fill it (``gw.cache.stage``)."""
        assert self.cache is not None and route.cache is not None
        exchange = request.exchange
        outcome = self.cache.serve(
            request,
            route.name,
            route.cache,
            forward=lambda: self._forward(request, route, headers),
            relay=lambda upstream: self._relay(request, upstream),
            answer=lambda status, kept, body: self._respond(
                exchange, status, kept, [body], request
            ),
        )
        if self.metrics is not None:
            # The stage adds MISS or BYPASS itself; a hit carries the stored X-Cache: HIT.
            # APPSEC: read from the stage's own headers, never from what the upstream sent.
            said = next((v for n, v in exchange.add_headers if n == "X-Cache"), "HIT")
            self.metrics.cache(route.name, said.lower())
        return outcome

    def _keyed(self, request: Request, route: RouteSpec, headers: dict[str, str]) -> Outcome | None:
        """Replay the first answer to the request's Idempotency-Key, or record it
        (``gw.idempotency.stage``); None for a method the route does not key."""
        assert self.idempotency is not None and route.idempotency is not None
        if request.method not in route.idempotency.methods:
            return None
        exchange = request.exchange
        return self.idempotency.serve(
            request,
            route.name,
            route.idempotency,
            forward=lambda: self._forward(request, route, headers),
            relay=lambda upstream, body: self._relay(request, upstream, body),
            answer=lambda status, kept, body: self._respond(
                exchange, status, kept, [body], request
            ),
        )

    def _tunnel(
        self, request: Request, route: RouteSpec, headers: dict[str, str]
    ) -> Outcome | None:
        """Forward an upgrade handshake; on 101 the edge relays the tunnel (``gw.tunnel``);
        None for a request that is not one."""
        return self.tunnels.serve(
            request,
            route.upgrade,
            headers,
            forward=lambda asked: self._forward(request, route, asked, upgrade=True),
            relay=lambda upstream: self._relay(request, upstream),
            answer=lambda status, kept: self._respond(request.exchange, status, kept, [], None),
        )

    def _relay(
        self, request: Request, upstream: UpstreamResponse, body: Iterable[bytes] | None = None
    ) -> Outcome:
        """Pass the upstream's status, headers and streamed body on (``body``: the chunks a
        stage already began to read, then the rest)."""
        headers = response_headers(upstream.headers)
        if body is None:
            # PERF: a body that came with the head (a small answer) is answered in hand, with
            # no streaming wrapper: the connection goes back to the pool before the client is
            # written to, and the exchange is logged then, as for any answer in hand.
            whole = upstream.body_in_hand()
            if whole is not None:
                return self._respond(request.exchange, upstream.status, headers, whole, request)
            body = upstream.body()
        return self._respond(request.exchange, upstream.status, headers, body, request, upstream)

    # -- the one respond tail ----------------------------------------------------------------

    def _respond(
        self,
        exchange: Exchange,
        status: int,
        headers: list[tuple[str, str]],
        body: Iterable[bytes],
        shape: Request | None,
        upstream: UpstreamResponse | None = None,
    ) -> Outcome:
        """Every answer leaves here: shaped (transformed, compressed) for ``shape``'s path and
        Accept-Encoding when given, decorated (the stages' headers, the request id, security
        headers), then logged: now for a body in hand, when the server closes it for a
        streamed ``upstream`` body. A HEAD, 1xx, 204 or 304 answer carries no body."""
        exchange.status = status
        if exchange.method == "HEAD" or status in _BODILESS or status < 200:
            if upstream is not None:
                for _ in body:  # read to the end: the connection can then be reused
                    pass
                upstream, body = None, []
            shape = None
        if shape is not None:
            if self.shaper.shapes:
                headers, body = self.shaper.response(shape, status, headers, body)
            else:
                # PERF: what the shaper does with nothing to do, without its call: a copy,
                # which _decorate then extends, never the caller's list (a cached entry's).
                headers = list(headers)
        headers = self._decorate(exchange, headers)
        if upstream is None:
            chunks = list(body)
            exchange.bytes_sent = sum(map(len, chunks))
            self._egress(exchange)
            return Outcome(status, headers, [] if exchange.method == "HEAD" else chunks)
        closing = ClosingBody(body, exchange, lambda: self._egress(exchange, upstream))
        return Outcome(status, headers, closing)

    def _decorate(
        self, exchange: Exchange, headers: list[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        """Add the stages' headers, the request id, and security headers the upstream lacks.

        PERF: the names are lower-cased and compared by C (``map``, ``isdisjoint``), with a
        Python step per field only when a stage's field is already there.
        """
        present = set(map(str.lower, map(field_name, headers)))
        present.discard("vary")  # several Vary headers combine
        added = exchange.add_headers
        if added:
            if present.isdisjoint(map(str.lower, map(field_name, added))):
                headers += added
            else:
                headers += [(n, v) for n, v in added if n.lower() not in present]
        headers.append(("X-Request-Id", exchange.request_id))
        if present.isdisjoint(self._security_names):
            headers += self._security
        else:
            headers += [(n, v) for n, v in self._security if n.lower() not in present]
        return headers

    def _error(self, exchange: Exchange, ex: GatewayError) -> Outcome:
        """Answer a gateway error in the one JSON error shape."""
        exchange.error = ex.code
        body = ex.render(exchange.request_id)
        headers = [("Content-Type", _JSON), ("Content-Length", str(len(body))), *ex.headers.items()]
        if ex.status in _CLOSING:
            # APPSEC: a malformed or unread request ends its connection (as nginx and
            # gunicorn do): nothing the client sent after it is read as another request.
            headers.append(("Connection", "close"))
        return self._respond(exchange, ex.status, headers, [body], shape=None)

    def _egress(self, exchange: Exchange, upstream: UpstreamResponse | None = None) -> None:
        """Log and count the exchange; release an upstream connection the client did not read
        to the end."""
        if upstream is not None and not upstream.finished:
            upstream.abandon()
        inflight.finished(exchange)
        # PERF: one append; its line and its counts are made with its batch (within 0.1 s)
        if batches.consumers:
            batches.add(exchange)

    # -- answers gw makes itself -------------------------------------------------------------

    def _local_answer(self, request: Request, answer: LocalAnswer) -> Outcome:
        """Metrics, health and ready, answered by gw itself (``gw.observe.endpoints``)."""
        status, content_type, body = answer
        headers = [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ]
        return self._respond(request.exchange, status, headers, [body], shape=None)

    # -- helpers ----------------------------------------------------------------------------

    def _upstream_headers(self, request: Request, route: RouteSpec) -> dict[str, str]:
        """What the upstream receives (``gw.core.outgoing``), then the path's header rules."""
        preserve = route.upstream is not None and self.clients[route.upstream].spec.preserve_host
        headers = upstream_headers(request, self.owned, preserve)
        return self.shaper.request_headers(request, headers) if self.shaper.shapes else headers

    def _idempotency_stage(self, config: Config) -> IdempotencyStage | None:
        if config.idempotency_store is None:
            return None
        server = config.server
        return IdempotencyStage(
            config.idempotency_store, server.min_upload_rate, server.upload_grace, self.metrics
        )

    def _aggregator(self) -> Aggregator:
        if self._composer is None:
            self._composer = Aggregator(self.config.aggregator_threads)
        return self._composer

    def _part_observer(self, reports: list[PartReport]) -> Callable[[PartReport], None]:
        """Count a part in its upstream's series (via="aggregate") and keep it for the log."""
        metrics = self.metrics

        def observe(report: PartReport) -> None:
            reports.append(report)  # from the part's thread: list.append is atomic
            if metrics is None:
                return
            if report.status is None:
                metrics.upstream_error(report.upstream, report.error or "", via="aggregate")
            else:
                metrics.upstream(report.upstream, report.seconds, via="aggregate")

        return observe

    def _retry_observer(self, upstream: str) -> Callable[[str], None] | None:
        metrics = self.metrics
        if metrics is None:
            return None
        return lambda outcome: metrics.retry(upstream, outcome)


def choose_route(
    table: RouteTable[RouteSpec], request: Request, owned: frozenset[str]
) -> RouteMatch[RouteSpec]:
    """The route ``request`` takes (``gw explain`` asks the same function); ``owned``: the
    gateway-owned headers, which route conditions never see.

    Raises:
        ClientError: no route matches (404), or none allows the method (405).
    """
    host = request.authority.name if request.authority else None
    view = route_view(table, request, owned) if table.conditional else None  # PERF: no call
    if request.method == "OPTIONS" and is_preflight(request.method, request.headers):
        # A CORS preflight is about the route the real request will take, but only a
        # route whose CORS policy gw answers itself may take the requested method.
        # APPSEC: any other OPTIONS is routed, authenticated and forwarded as OPTIONS.
        requested = (request.headers.get("Access-Control-Request-Method") or "").upper()
        with contextlib.suppress(ClientError):
            match = table.match(requested, request.path, host, view)
            if match.route.payload.cors is not None:
                return match
    return table.match(request.method, request.path, host, view)


def route_view(
    table: RouteTable[RouteSpec], request: Request, owned: frozenset[str]
) -> RequestView | None:
    """What route conditions read of ``request``: None when no route has conditions."""
    if not table.conditional:
        return None  # PERF: no view, nor header, query or cookie parsing, without conditions
    return RequestView(request.headers, request.query, owned)


def _log_nearest(table: RouteTable[RouteSpec], request: Request, owned: frozenset[str]) -> None:
    """Say at debug level which routes came nearest to a request that matched none."""
    host = request.authority.name if request.authority else None
    view = route_view(table, request, owned)
    misses = nearest(table.ordered(), request.method, request.path, host, view=view)
    log.debug(
        "no route for %s %s (request %s); nearest: %s",
        request.method,
        request.path,
        request.request_id,
        describe(misses) or "no routes",
    )


def _log_parts(exchange: Exchange, reports: list[PartReport]) -> None:
    """Name the targets the parts reached, and each part's outcome, in the access line."""
    targets = dict.fromkeys(report.target for report in reports if report.target)
    exchange.upstream_target = ",".join(targets) or None
    exchange.extra["parts"] = [report.log_fields() for report in reports]


def _balance_key(
    client: UpstreamClient, request: Request, headers: Mapping[str, str]
) -> str | None:
    """The sticky key of a ``balance: hash`` upstream: client address, user, a header or a
    cookie (as forwarded); None (no key: weighted round robin) when it is missing."""
    source = client.hash_source
    if source is None:
        return None
    kind, name = source
    if kind == "client_ip":
        return request.client.ip
    if kind == "user":
        return request.identity.subject if request.identity else None
    if kind == "cookie":
        cookie = next((v for k, v in headers.items() if k.lower() == "cookie"), "")
        values = parse_cookies(cookie).get(name, [])
        # A repeated cookie is no key: the upstream could read the other copy.
        return values[0] if len(values) == 1 else None
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), None)
