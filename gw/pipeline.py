"""The request pipeline: named stages in a fixed order, readable in one method.

``Gateway.handle`` is the whole flow. Ingress turns the WSGI environ into one ``Request``
(``gw.core.request``); every stage after takes ``(request, route)`` and never sees the
environ. Each stage may stop the request by raising a ``GatewayError``, which becomes the one
JSON error shape. Every answer, whatever made it, leaves through one tail (``_respond``). The
pipeline knows nothing of Falcon.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote

from gw import __version__
from gw.auth import Unauthorized
from gw.cache.stage import CacheStage
from gw.config.assemble import Config, RouteSpec
from gw.core import tracing
from gw.core.body import LimitedBody
from gw.core.exchange import ClosingBody, Exchange, Outcome
from gw.core.forwarding import TrustedProxies
from gw.core.headers import (
    GATEWAY_OWNED,
    Headers,
    check_connection,
    chunked_only,
    forwardable,
    request_id,
    response_headers,
)
from gw.core.hosts import HostAllowList, effective_host
from gw.core.paths import canonicalize, encode_path, split_target
from gw.core.request import Request
from gw.core.retry import RetryBudget
from gw.core.routing import RouteMatch
from gw.cors import is_preflight
from gw.edge import inflight
from gw.errors import (
    BodyTooLarge,
    ClientError,
    GatewayError,
    InvalidHeader,
    RouteNotFound,
    UpstreamError,
)
from gw.health import state as health_state
from gw.health.balancer import for_upstream
from gw.limits.admission import Requester
from gw.observe import accesslog
from gw.observe.metrics import worker_metrics
from gw.shaping.compose import Aggregator, PartReport
from gw.upstream.client import UpstreamClient, UpstreamRequest, UpstreamResponse
from gw.upstream.pool import Connector

log = logging.getLogger("gw")

_BODILESS = frozenset({204, 304})
_CLOSING = frozenset({400, 408, 413, 501, 505})
_JSON = "application/json"


class InvalidQuery(ClientError):
    code = "invalid_query"


class UnsupportedCoding(ClientError):
    status = 501
    code = "not_implemented"


class CorsRefused(ClientError):
    status = 403
    code = "cors_refused"


class Gateway:
    """Everything compiled from one config, serving requests until the next reload."""

    def __init__(
        self, config: Config, metrics_port: str | None = None, connect: Connector | None = None
    ) -> None:
        """``metrics_port``: the port of a listener that serves only the metrics path and the
        health and ready paths (``GW_METRICS_BIND``); the metrics path is then served there
        alone. ``connect``: how upstream connections are made (tests pass a fake transport)."""
        self.config = config
        self.metrics_port = metrics_port
        self.server = config.server
        self.proxies = TrustedProxies(config.server.trusted_proxies)
        hosts = config.server.hosts
        self.hosts = HostAllowList(hosts) if hosts is not None else None
        self.metrics = worker_metrics() if config.metrics.enabled else None
        self.clients = {
            name: UpstreamClient(
                spec,
                for_upstream(spec),
                RetryBudget(spec.budget_ratio, spec.budget_min_per_second),
                self._retry_observer(name),
                connect=connect,
            )
            for name, spec in config.upstreams.items()
        }
        if self.metrics is not None:
            self.metrics.watch_health(health_state.snapshot)
        if self.metrics is not None and config.admission is not None:
            config.admission.observe = self.metrics.ratelimit
            self.metrics.watch_limiter_table(config.admission.table_stats)
        self._composer: Aggregator | None = None
        self.cache = CacheStage(config.cache_store) if config.cache_store else None
        self.authenticator = config.authenticator
        self.auth_throttle = config.auth_throttle
        # APPSEC: every header the gateway sets, identity headers included, is dropped from
        # every client request in every spelling, on every route, authenticated or not.
        owned = self.authenticator.header_names() if self.authenticator else frozenset()
        self.owned = GATEWAY_OWNED | owned
        self.builtins: dict[str, Callable[[Request], Outcome]] = {
            config.server.health_path: self._health,
            config.server.ready_path: self._ready,
        }

    def handle(self, environ: Mapping[str, Any]) -> Outcome:
        """Serve one request: ingress, route, forward, respond; egress when the body closes."""
        exchange = self._exchange(environ)
        inflight.started(exchange)
        if self.metrics is not None:
            self.metrics.inflight(1)
        try:
            request = self._ingress(exchange, environ)
            local = self._local_answer(request)
            if local is not None:
                return local
            if self.hosts is not None:
                self.hosts.check(request.authority)
            route = self._route(request)
            preflight = self._cors(request, route)
            if preflight is not None:
                return preflight
            self._authenticate(request, route)
            headers = self._upstream_headers(request, route)
            self._admit(request, route, headers)
            if route.aggregate is not None:
                return self._compose(request, route, headers)
            if route.cache is not None and self.cache is not None:
                return self._cached(request, route, headers)
            return self._relay(request, self._forward(request, route, headers))
        except GatewayError as ex:
            return self._error(exchange, ex)
        except Exception:
            log.exception("unexpected error serving %s", exchange.request_id)
            failure = GatewayError("the gateway failed to handle this request")
            return self._error(exchange, failure)

    # -- ingress: the only functions that read the environ ------------------------------------

    def _exchange(self, environ: Mapping[str, Any]) -> Exchange:
        """Mint or honour the request id, start the clock, resolve who the client is."""
        raw_target = environ.get("RAW_URI") or environ.get("REQUEST_URI") or _rebuild(environ)
        exchange = Exchange(
            request_id=request_id(environ.get("HTTP_X_REQUEST_ID")),
            method=environ["REQUEST_METHOD"],
            raw_target=raw_target,
        )
        exchange.client = self.proxies.resolve(
            environ.get("REMOTE_ADDR") or "",
            environ.get("HTTP_X_FORWARDED_FOR"),
            environ.get("HTTP_X_FORWARDED_PROTO"),
            environ.get("wsgi.url_scheme", "http"),
        )
        return exchange

    def _ingress(self, exchange: Exchange, environ: Mapping[str, Any]) -> Request:
        """Build the one ``Request``: decode and canonicalize the path once, one effective
        host (400 if Host is missing, repeated or invalid), and no Connection header that
        names a framing or gateway-owned header (400)."""
        raw_path, query = split_target(exchange.raw_target)
        # APPSEC: the query passes byte for byte, so it must be a legal request-target
        # query; anything else could be read differently by the upstream.
        if query and not (
            query.isascii() and query.isprintable() and " " not in query and "#" not in query
        ):
            raise InvalidQuery("the query string has characters that must be percent-encoded")
        exchange.path = canonicalize(raw_path)
        exchange.query = query
        protocol = environ.get("SERVER_PROTOCOL", "")
        exchange.authority = effective_host(exchange.raw_target, environ.get("HTTP_HOST"), protocol)
        headers = Headers.from_environ(environ)
        check_connection(headers.get("Connection"), self.owned)
        return Request(
            exchange=exchange,
            headers=headers,
            path=exchange.path,
            query=query,
            authority=exchange.authority,
            protocol=protocol,
            peer=environ.get("REMOTE_ADDR") or "",
            port=environ.get("SERVER_PORT"),
            body=environ["wsgi.input"],
        )

    # -- stages ------------------------------------------------------------------------------

    def _route(self, request: Request) -> RouteSpec:
        host = request.authority.name if request.authority else None
        table = self.config.table
        match: RouteMatch[RouteSpec] | None = None
        if is_preflight(request.method, request.headers):
            # A CORS preflight is about the route the real request will take, but only a
            # route whose CORS policy gw answers itself may take the requested method.
            # APPSEC: any other OPTIONS is routed, authenticated and forwarded as OPTIONS.
            requested = (request.headers.get("Access-Control-Request-Method") or "").upper()
            with contextlib.suppress(ClientError):
                match = table.match(requested, request.path, host)
            if match is not None and match.route.payload.cors is None:
                match = None
        if match is None:
            match = table.match(request.method, request.path, host)
        request.exchange.route = match.route.name
        request.params = match.params
        return match.route.payload

    def _cors(self, request: Request, route: RouteSpec) -> Outcome | None:
        """Answer a preflight here; mark an actual cross-origin response's headers."""
        policy = route.cors
        if policy is None:
            return None
        headers = request.headers
        origin = headers.get("Origin")
        if not is_preflight(request.method, headers):
            request.exchange.add_headers += policy.response_headers(origin)
            return None
        allowed = policy.preflight(
            origin or "",
            headers.get("Access-Control-Request-Method") or "",
            headers.get("Access-Control-Request-Headers") or "",
        )
        if not allowed:
            raise CorsRefused("this cross-origin request is not allowed by the route's CORS policy")
        return self._respond(request.exchange, 204, allowed, [], shape=None)

    def _authenticate(self, request: Request, route: RouteSpec) -> None:
        """Verify the caller once, at the edge, by the route's policy (401/403 otherwise).

        An address that failed too often gets 429 before its credential is read (see
        ``gw.auth.throttle`` for what counts and why a valid credential waits too).
        """
        if self.authenticator is None:
            return
        client = request.client.ip
        throttle = self.auth_throttle
        if throttle is not None and self.authenticator.applies(request.path, route.auth):
            throttle.check(client)
        try:
            identity = self.authenticator.authenticate(
                request.path,
                request.headers.items(),
                route.auth,
                client=client,
                request_id=request.request_id,
            )
        except Unauthorized as ex:
            if throttle is not None and throttle.counts(ex):
                throttle.record_failure(client)
            raise
        request.identity = identity
        if identity is not None:
            request.exchange.extra["user"] = identity.subject
            if identity.issuer is not None:
                request.exchange.extra["issuer"] = identity.issuer

    def _admit(self, request: Request, route: RouteSpec, headers: Mapping[str, str]) -> None:
        """Draw from every rate limit that applies; 429 before anything reaches the upstream."""
        admission = self.config.admission
        if admission is None:
            return
        limits = admission.limits_for(request.method, request.path)
        if limits:
            who = Requester.of(request, route.name, headers)
            request.exchange.add_headers += admission.admit(limits, who)

    def _forward(
        self, request: Request, route: RouteSpec, headers: dict[str, str]
    ) -> UpstreamResponse:
        """Rewrite the path, stream the body, send through the upstream's pool."""
        assert route.upstream is not None
        client = self.clients[route.upstream]
        exchange = request.exchange
        exchange.upstream = route.upstream
        path = encode_path(route.rewrite.apply(request.path))
        if request.query:
            path = f"{path}?{request.query}"
        body, length = self._request_body(request)
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
        outgoing = UpstreamRequest(
            request.method,
            path,
            headers,
            sent,
            chunked=sent is not None and length is None,
            read_timeout=route.read_timeout,
            policy=route.retry or client.spec.retry,
            deadline=exchange.started + self.server.deadline,
            body_deadline=exchange.started + (route.stream_timeout or self.server.deadline),
            balance_key=_balance_key(client, request, headers),
        )
        started = time.monotonic()
        try:
            response = client.send(outgoing)
        except UpstreamError as ex:
            if self.metrics is not None:
                self.metrics.upstream_error(route.upstream, ex.code)
            raise
        if self.metrics is not None:
            self.metrics.upstream(route.upstream, time.monotonic() - started)
        exchange.upstream_target = str(response.target)
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
        """Answer from the cache, or fill it (once per host for concurrent misses)."""
        assert self.cache is not None
        rules = route.cache
        assert rules is not None
        exchange = request.exchange
        lookup = self.cache.lookup(request, route.name, rules)
        if lookup.hit is not None:
            hit = lookup.hit
            return self._respond(
                exchange, hit.status, list(hit.response_headers()), [hit.body], request
            )
        if lookup.key is None or lookup.lease is None:
            exchange.add_headers.append(("X-Cache", "BYPASS"))
            return self._relay(request, self._forward(request, route, headers))
        try:
            upstream = self._forward(request, route, headers)
            storage = self.cache.storage(
                rules, upstream.status, upstream.headers, request.identity is not None
            )
            length = _length(upstream.headers)
            if (
                storage.ttl > 0
                and request.method == "GET"
                and length is not None
                and length <= rules.max_body_bytes
            ):
                body = b"".join(upstream.body())
                self.cache.store(lookup.key, upstream.status, upstream.headers, body, storage)
                exchange.add_headers.append(("X-Cache", "MISS"))
                kept = response_headers(upstream.headers)
                return self._respond(exchange, upstream.status, kept, [body], request)
            if request.method == "GET":
                self.cache.decline(lookup.key)
        finally:
            lookup.lease.release()
        exchange.add_headers.append(("X-Cache", "BYPASS"))
        return self._relay(request, upstream)

    def _relay(self, request: Request, upstream: UpstreamResponse) -> Outcome:
        """Pass the upstream's status, headers and streamed body on."""
        headers = response_headers(upstream.headers)
        return self._respond(
            request.exchange, upstream.status, headers, upstream.body(), request, upstream
        )

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
            headers, body = self._shape(shape, status, headers, body)
        headers = self._decorate(exchange, headers)
        if upstream is None:
            chunks = list(body)
            exchange.bytes_sent = sum(len(b) for b in chunks)
            self._egress(exchange)
            return Outcome(status, headers, [] if exchange.method == "HEAD" else chunks)
        closing = ClosingBody(body, exchange, lambda: self._egress(exchange, upstream))
        return Outcome(status, headers, closing)

    def _shape(
        self,
        request: Request,
        status: int,
        headers: list[tuple[str, str]],
        body: Iterable[bytes],
    ) -> tuple[list[tuple[str, str]], Iterable[bytes]]:
        """Apply the path's transformations (JSON within the size limit), then compression."""
        transformer = self.config.transformer
        rules = transformer.for_path(request.path) if transformer else None
        if rules is not None:
            if rules.wants_body(status, headers):
                headers, data = rules.apply(status, headers, b"".join(body))
                body = [data]
            else:
                headers = rules.response_headers(headers)
        compressor = self.config.compressor
        if compressor is not None:
            accept = request.headers.get("Accept-Encoding")
            headers, body = compressor.apply(request.method, status, accept, headers, body)
        return list(headers), body

    def _decorate(
        self, exchange: Exchange, headers: list[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        """Add the stages' headers, the request id, and security headers the upstream lacks."""
        present = {name.lower() for name, _ in headers}
        present.discard("vary")  # several Vary headers combine
        headers += [(n, v) for n, v in exchange.add_headers if n.lower() not in present]
        headers.append(("X-Request-Id", exchange.request_id))
        headers += [(n, v) for n, v in self.config.security_headers if n.lower() not in present]
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
        """Log the exchange; release an upstream connection the client did not read to the end."""
        if upstream is not None and not upstream.finished:
            upstream.abandon()
        accesslog.write(exchange)
        inflight.finished(exchange)
        idle = inflight.idle()
        if idle:
            accesslog.flush()  # nothing else in flight: write this line (and any before) now
        if self.metrics is not None:
            self.metrics.inflight(-1)
            seconds = time.monotonic() - exchange.started
            self.metrics.request(exchange.route, exchange.method, exchange.status, seconds)
            self.metrics.publish(idle)

    # -- answers gw makes itself -------------------------------------------------------------

    def _local_answer(self, request: Request) -> Outcome | None:
        """Metrics, health and ready, answered by gw itself; None for everything else.

        With ``GW_METRICS_BIND`` the metrics path is served on that listener alone, and that
        listener serves nothing else (404).
        """
        on_metrics_listener = self.metrics_port is not None and request.port == self.metrics_port
        scrape = self.metrics is not None and request.path == self.config.metrics.path
        if scrape and (self.metrics_port is None or on_metrics_listener):
            return self._scrape(request)
        builtin = self.builtins.get(request.path)
        if builtin is not None:
            return builtin(request)
        if on_metrics_listener:
            raise RouteNotFound("the metrics listener serves only metrics, health and ready")
        return None

    def _scrape(self, request: Request) -> Outcome:
        """Answer a Prometheus scrape, but only to the peers ``metrics.allow_from`` lists."""
        assert self.metrics is not None
        # APPSEC: the direct socket peer decides, never X-Forwarded-For: behind nginx every
        # public request arrives from nginx, so a forwarded address would prove nothing.
        if not self.config.metrics.allows(request.peer):
            raise RouteNotFound("no route matches this path")
        content_type, body = self.metrics.render(request.headers.by_name())
        return self._local(request, 200, content_type, body)

    def _health(self, request: Request) -> Outcome:
        payload = {
            "status": "healthy",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "version": __version__,
        }
        return self._local(request, 200, _JSON, json.dumps(payload).encode())

    def _ready(self, request: Request) -> Outcome:
        payload = {"status": "ready", "routes": len(self.config.table.ordered())}
        return self._local(request, 200, _JSON, json.dumps(payload).encode())

    def _local(self, request: Request, status: int, content_type: str, body: bytes) -> Outcome:
        headers = [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ]
        return self._respond(request.exchange, status, headers, [body], shape=None)

    # -- helpers ----------------------------------------------------------------------------

    def _request_body(self, request: Request) -> tuple[LimitedBody | None, int | None]:
        """The body to send and its length (None: chunked, length unknown)."""
        limit = self.server.max_body_bytes
        coding = request.headers.get("Transfer-Encoding")
        if coding is not None:
            _check_transfer_coding(coding, request.protocol)
            length = None
        else:
            length = _content_length(request.headers.get("Content-Length"))
            if length == 0:
                return None, None
            if length > limit:
                raise BodyTooLarge(f"request body of {length} bytes exceeds the limit of {limit}")
        body = LimitedBody(request.body, limit, length)
        if self.server.min_upload_rate:
            body.require_rate(self.server.min_upload_rate, self.server.upload_grace)
        return body, length

    def _upstream_headers(self, request: Request, route: RouteSpec) -> dict[str, str]:
        """Client headers minus hop-by-hop and gateway-owned ones, then the gateway's own."""
        headers = dict(forwardable(request.headers.items(), self.owned))
        info = request.client
        host = request.host or ""
        if route.upstream is not None and host and self.clients[route.upstream].spec.preserve_host:
            headers["Host"] = host
        # Otherwise no Host here: each target's own host:port is written when the request is
        # sent to the target the balancer picked (gw.upstream.wire.request_head).
        headers["X-Forwarded-For"] = info.forwarded_for
        headers["X-Forwarded-Proto"] = info.proto
        if host:
            headers["X-Forwarded-Host"] = host
        headers["X-Real-IP"] = info.ip
        headers["X-Request-Id"] = request.request_id
        trace = tracing.propagate(
            request.headers.get("Traceparent"), request.headers.get("Tracestate")
        )
        headers["traceparent"] = trace.traceparent
        if trace.tracestate:
            headers["tracestate"] = trace.tracestate
        request.exchange.extra["trace_id"] = trace.trace_id
        if request.identity is not None:
            headers.update(request.identity.headers())
        transformer = self.config.transformer
        rules = transformer.for_path(request.path) if transformer else None
        if rules is not None:
            headers = rules.request_headers(headers)
        return headers

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


def _log_parts(exchange: Exchange, reports: list[PartReport]) -> None:
    """Name the targets the parts reached, and each part's outcome, in the access line."""
    targets = dict.fromkeys(report.target for report in reports if report.target)
    exchange.upstream_target = ",".join(targets) or None
    exchange.extra["parts"] = [report.log_fields() for report in reports]


def _balance_key(
    client: UpstreamClient, request: Request, headers: Mapping[str, str]
) -> str | None:
    """The sticky key of a ``balance: hash`` upstream: client address, user, or a header."""
    source = client.hash_source
    if source is None:
        return None
    kind, name = source
    if kind == "client_ip":
        return request.client.ip
    if kind == "user":
        return request.identity.subject if request.identity else None
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), None)


def _length(headers: list[tuple[str, str]]) -> int | None:
    value = next((v for n, v in headers if n.lower() == "content-length"), None)
    return int(value) if value and value.isdigit() else None


def _content_length(value: str | None) -> int:
    if not value:
        return 0
    if not value.isdigit():
        raise InvalidHeader("Content-Length must be a non-negative integer")
    return int(value)


def _check_transfer_coding(coding: str, protocol: str) -> None:
    """Accept only a lone ``chunked`` coding, and only from HTTP/1.1 (RFC 9112 section 6.1).

    APPSEC: the gevent worker refuses these before the app runs; this holds for gunicorn's
    own parser too, whatever its version lets through.
    """
    if not chunked_only(coding):
        raise UnsupportedCoding(f"transfer coding {coding[:60]!r} is not supported")
    if protocol == "HTTP/1.0":
        raise InvalidHeader("Transfer-Encoding is not allowed in an HTTP/1.0 request")


def _rebuild(environ: Mapping[str, Any]) -> str:
    """Servers without a raw target: best effort from the decoded PATH_INFO.

    Warning:
        Without RAW_URI an encoded ``/`` cannot be told from a real one; gunicorn provides
        RAW_URI, which is what gw is deployed with.
    """
    path = quote(
        environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "/"), safe="/!$&'()*+,;=:@"
    )
    query = environ.get("QUERY_STRING")
    return f"{path}?{query}" if query else path
