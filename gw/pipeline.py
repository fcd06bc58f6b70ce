"""The request pipeline: named stages in a fixed order, readable in one method.

``Gateway.handle`` is the whole flow. Each stage may stop the request by raising a
``GatewayError``, which becomes the one JSON error shape. The pipeline knows WSGI environ
keys but nothing of Falcon.
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
from gw.auth import Identity, Unauthorized
from gw.cache.stage import CacheStage
from gw.config.assemble import Config, RouteSpec
from gw.core import tracing
from gw.core.body import LimitedBody
from gw.core.exchange import ClosingBody, Exchange, Outcome
from gw.core.forwarding import TrustedProxies
from gw.core.headers import (
    GATEWAY_OWNED,
    check_connection,
    chunked_only,
    forwardable,
    request_headers,
    request_id,
    response_headers,
)
from gw.core.hosts import HostAllowList, effective_host
from gw.core.paths import canonicalize, encode_path, split_target
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
from gw.limits.admission import Requester
from gw.observe import accesslog
from gw.observe.metrics import worker_metrics
from gw.shaping.compose import Aggregator, PartReport
from gw.upstream.client import UpstreamClient, UpstreamResponse

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

    def __init__(self, config: Config, metrics_port: str | None = None) -> None:
        """``metrics_port``: the port of a listener that serves only the metrics path and the
        health and ready paths (``GW_METRICS_BIND``); the metrics path is then served there
        alone."""
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
                RetryBudget(spec.budget_ratio, spec.budget_min_per_second),
                self._retry_observer(name),
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
        self.builtins: dict[str, Callable[[Exchange], Outcome]] = {
            config.server.health_path: self._health,
            config.server.ready_path: self._ready,
        }

    def handle(self, environ: Mapping[str, Any]) -> Outcome:
        """Serve one request: ingress, route, forward, respond; egress when the body closes."""
        exchange = self._ingress(environ)
        inflight.started(exchange)
        if self.metrics is not None:
            self.metrics.inflight(1)
        try:
            self._canonicalize(exchange, environ)
            self._check_message(exchange, environ)
            local = self._local_answer(exchange, environ)
            if local is not None:
                return self._finish(exchange, local)
            if self.hosts is not None:
                self.hosts.check(exchange.authority)
            match = self._route(exchange, environ)
            preflight = self._cors(exchange, match, environ)
            if preflight is not None:
                return self._finish(exchange, preflight)
            identity = self._authenticate(exchange, match, environ)
            headers = self._upstream_headers(exchange, environ, match.route.payload, identity)
            self._admit(exchange, match, headers, identity)
            if match.route.payload.aggregate is not None:
                return self._compose(exchange, match, environ, headers, identity)
            if match.route.payload.cache is not None and self.cache is not None:
                return self._cached(exchange, match, environ, headers, identity)
            upstream = self._forward(exchange, match, environ, headers)
            return self._respond(exchange, upstream, environ)
        except GatewayError as ex:
            return self._finish(exchange, self.error_outcome(exchange, ex))
        except Exception:
            log.exception("unexpected error serving %s", exchange.request_id)
            failure = GatewayError("the gateway failed to handle this request")
            return self._finish(exchange, self.error_outcome(exchange, failure))

    # -- stages ------------------------------------------------------------------------------

    def _ingress(self, environ: Mapping[str, Any]) -> Exchange:
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

    def _canonicalize(self, exchange: Exchange, environ: Mapping[str, Any]) -> None:
        """Decode once, canonicalize once: the one path used from here on."""
        raw_path, query = split_target(exchange.raw_target)
        # APPSEC: the query passes byte for byte, so it must be a legal request-target
        # query; anything else could be read differently by the upstream.
        if query and not (
            query.isascii() and query.isprintable() and " " not in query and "#" not in query
        ):
            raise InvalidQuery("the query string has characters that must be percent-encoded")
        exchange.path = canonicalize(raw_path)
        exchange.query = query

    def _check_message(self, exchange: Exchange, environ: Mapping[str, Any]) -> None:
        """One effective host per request (400 if Host is missing, repeated or invalid), and
        no Connection header that names a framing or gateway-owned header (400)."""
        exchange.authority = effective_host(
            exchange.raw_target, environ.get("HTTP_HOST"), environ.get("SERVER_PROTOCOL", "")
        )
        check_connection(environ.get("HTTP_CONNECTION"), self.owned)

    def _route(self, exchange: Exchange, environ: Mapping[str, Any]) -> RouteMatch[RouteSpec]:
        host = exchange.authority.name if exchange.authority else None
        table = self.config.table
        match = None
        if is_preflight(exchange.method, environ):
            # A CORS preflight is about the route the real request will take, but only a
            # route whose CORS policy gw answers itself may take the requested method.
            # APPSEC: any other OPTIONS is routed, authenticated and forwarded as OPTIONS.
            requested = environ["HTTP_ACCESS_CONTROL_REQUEST_METHOD"].upper()
            with contextlib.suppress(ClientError):
                match = table.match(requested, exchange.path, host)
            if match is not None and match.route.payload.cors is None:
                match = None
        if match is None:
            match = table.match(exchange.method, exchange.path, host)
        exchange.route = match.route.name
        return match

    def _cors(
        self, exchange: Exchange, match: RouteMatch[RouteSpec], environ: Mapping[str, Any]
    ) -> Outcome | None:
        """Answer a preflight here; mark an actual cross-origin response's headers."""
        policy = match.route.payload.cors
        if policy is None:
            return None
        origin = environ.get("HTTP_ORIGIN")
        if not is_preflight(exchange.method, environ):
            exchange.add_headers += policy.response_headers(origin)
            return None
        allowed = policy.preflight(
            origin or "",
            environ["HTTP_ACCESS_CONTROL_REQUEST_METHOD"],
            environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS", ""),
        )
        if not allowed:
            raise CorsRefused("this cross-origin request is not allowed by the route's CORS policy")
        return Outcome(204, self._decorate(exchange, allowed), [])

    def _authenticate(
        self, exchange: Exchange, match: RouteMatch[RouteSpec], environ: Mapping[str, Any]
    ) -> Identity | None:
        """Verify the caller once, at the edge, by the route's policy (401/403 otherwise).

        An address that failed too often gets 429 before its credential is read (see
        ``gw.auth.throttle`` for what counts and why a valid credential waits too).
        """
        if self.authenticator is None:
            return None
        assert exchange.client is not None
        policy = match.route.payload.auth
        throttle = self.auth_throttle
        if throttle is not None and self.authenticator.applies(exchange.path, policy):
            throttle.check(exchange.client.ip)
        try:
            identity = self.authenticator.authenticate(
                exchange.path,
                request_headers(environ),
                policy,
                client=exchange.client.ip,
                request_id=exchange.request_id,
            )
        except Unauthorized as ex:
            if throttle is not None and throttle.counts(ex):
                throttle.record_failure(exchange.client.ip)
            raise
        if identity is not None:
            exchange.extra["user"] = identity.subject
            if identity.issuer is not None:
                exchange.extra["issuer"] = identity.issuer
        return identity

    def _admit(
        self,
        exchange: Exchange,
        match: RouteMatch[RouteSpec],
        headers: Mapping[str, str],
        identity: Identity | None,
    ) -> None:
        """Draw from every rate limit that applies; 429 before anything reaches the upstream."""
        admission = self.config.admission
        if admission is None:
            return
        limits = admission.limits_for(exchange.method, exchange.path)
        if not limits:
            return
        assert exchange.client is not None
        who = Requester(
            client_ip=exchange.client.ip,
            route=match.route.name,
            headers={k.lower(): v for k, v in headers.items()},
            subject=identity.principal if identity else None,
            api_key=identity.key_id if identity and identity.method == "api_key" else None,
        )
        exchange.add_headers += admission.admit(limits, who)

    def _forward(
        self,
        exchange: Exchange,
        match: RouteMatch[RouteSpec],
        environ: Mapping[str, Any],
        headers: dict[str, str],
    ) -> UpstreamResponse:
        """Rewrite the path, stream the body, send through the upstream's pool."""
        spec = match.route.payload
        assert spec.upstream is not None
        client = self.clients[spec.upstream]
        exchange.upstream = spec.upstream
        path = encode_path(spec.rewrite.apply(exchange.path))
        if exchange.query:
            path = f"{path}?{exchange.query}"
        body, length = self._request_body(environ)
        sent: LimitedBody | bytes | None = body
        buffer = self.server.request_buffer_bytes
        if body is not None and buffer and (length is None or length <= buffer):
            # APPSEC: a small body is read whole before an upstream connection is taken, so
            # a client that trickles it holds no upstream connection (nginx buffers too).
            whole = body.buffer(buffer)
            if whole is not None:
                sent, length = whole, len(whole)
        chunked = sent is not None and length is None
        if length is not None:
            # APPSEC: the framing sent upstream is gw's own: the validated length of the body
            # gw sends (LimitedBody sends exactly that many bytes or fails), never a header
            # copied from the client.
            headers = {**headers, "Content-Length": str(length)}
        started = time.monotonic()
        try:
            response = client.send(
                exchange.method,
                path,
                headers,
                sent,
                chunked,
                spec.read_timeout,
                policy=spec.retry or client.spec.retry,
                deadline=exchange.started + self.server.deadline,
                body_deadline=exchange.started + (spec.stream_timeout or self.server.deadline),
                balance_key=_balance_key(client, exchange, headers),
            )
        except UpstreamError as ex:
            if self.metrics is not None:
                self.metrics.upstream_error(spec.upstream, ex.code)
            raise
        if self.metrics is not None:
            self.metrics.upstream(spec.upstream, time.monotonic() - started)
        exchange.upstream_target = str(response.target)
        return response

    def _compose(
        self,
        exchange: Exchange,
        match: RouteMatch[RouteSpec],
        environ: Mapping[str, Any],
        headers: dict[str, str],
        identity: Identity | None,
    ) -> Outcome:
        """Fan out to the aggregate's parts in parallel and answer one merged document."""
        spec = match.route.payload
        assert spec.aggregate is not None
        exchange.upstream = ",".join(dict.fromkeys(part.upstream for part in spec.aggregate.parts))
        reports: list[PartReport] = []
        try:
            outcome = self._aggregator().run(
                spec.aggregate,
                match.params,
                exchange.query,
                identity,
                headers,
                self.clients,
                observe=self._part_observer(reports),
            )
        finally:
            _log_parts(exchange, list(reports))  # the parts that finished before the answer
        body: Iterable[bytes] = outcome.body
        headers_out, body = self._shape(exchange, environ, outcome.status, outcome.headers, body)
        outcome = Outcome(outcome.status, self._decorate(exchange, headers_out), body)
        return self._finish(exchange, outcome)

    def _cached(
        self,
        exchange: Exchange,
        match: RouteMatch[RouteSpec],
        environ: Mapping[str, Any],
        headers: dict[str, str],
        identity: Identity | None,
    ) -> Outcome:
        """Answer from the cache, or fill it (once per host for concurrent misses)."""
        assert self.cache is not None
        spec = match.route.payload
        rules = spec.cache
        assert rules is not None
        lookup = self.cache.lookup(
            spec.name,
            rules,
            exchange.method,
            exchange.authority.host if exchange.authority else None,
            exchange.path,
            exchange.query,
            {name.lower(): value for name, value in request_headers(environ)},
            identity.principal if identity else None,
            identity.key_id if identity and identity.method == "api_key" else None,
            scheme=exchange.client.proto if exchange.client else "http",
        )
        if lookup.hit is not None:
            hit = lookup.hit
            return self._answer(
                exchange, environ, hit.status, list(hit.response_headers()), hit.body
            )
        if lookup.key is None or lookup.lease is None:
            exchange.add_headers.append(("X-Cache", "BYPASS"))
            return self._respond(
                exchange, self._forward(exchange, match, environ, headers), environ
            )
        try:
            upstream = self._forward(exchange, match, environ, headers)
            storage = self.cache.storage(
                rules, upstream.status, upstream.headers, identity is not None
            )
            length = _length(upstream.headers)
            if (
                storage.ttl > 0
                and exchange.method == "GET"
                and length is not None
                and length <= rules.max_body_bytes
            ):
                body = b"".join(upstream.body())
                self.cache.store(lookup.key, upstream.status, upstream.headers, body, storage)
                exchange.add_headers.append(("X-Cache", "MISS"))
                kept = response_headers(upstream.headers)
                return self._answer(exchange, environ, upstream.status, kept, body)
            if exchange.method == "GET":
                self.cache.decline(lookup.key)
        finally:
            lookup.lease.release()
        exchange.add_headers.append(("X-Cache", "BYPASS"))
        return self._respond(exchange, upstream, environ)

    def _answer(
        self,
        exchange: Exchange,
        environ: Mapping[str, Any],
        status: int,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> Outcome:
        """Answer with a body already in hand (from the cache, or just stored in it)."""
        shaped, chunks = self._shape(exchange, environ, status, headers, [body])
        return self._finish(exchange, Outcome(status, self._decorate(exchange, shaped), chunks))

    def _respond(
        self, exchange: Exchange, upstream: UpstreamResponse, environ: Mapping[str, Any]
    ) -> Outcome:
        """Pass the upstream's status, headers and streamed body on; transform, compress."""
        status = upstream.status
        exchange.status = status
        headers = response_headers(upstream.headers)
        if exchange.method == "HEAD" or status in _BODILESS or status < 200:
            for _ in upstream.body():
                pass
            return self._finish(exchange, Outcome(status, self._decorate(exchange, headers), []))
        headers, body = self._shape(exchange, environ, status, headers, upstream.body())
        closing = ClosingBody(body, exchange, lambda: self._egress(exchange, upstream))
        return Outcome(status, self._decorate(exchange, headers), closing)

    def _shape(
        self,
        exchange: Exchange,
        environ: Mapping[str, Any],
        status: int,
        headers: list[tuple[str, str]],
        body: Iterable[bytes],
    ) -> tuple[list[tuple[str, str]], Iterable[bytes]]:
        """Apply the path's transformations (JSON within the size limit), then compression."""
        transformer = self.config.transformer
        rules = transformer.for_path(exchange.path) if transformer else None
        if rules is not None:
            if rules.wants_body(status, headers):
                headers, data = rules.apply(status, headers, b"".join(body))
                body = [data]
            else:
                headers = rules.response_headers(headers)
        compressor = self.config.compressor
        if compressor is not None:
            accept = environ.get("HTTP_ACCEPT_ENCODING")
            headers, body = compressor.apply(exchange.method, status, accept, headers, body)
        return list(headers), body

    def _aggregator(self) -> Aggregator:
        if self._composer is None:
            self._composer = Aggregator(self.config.aggregator_threads)
        return self._composer

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

    # -- helpers ----------------------------------------------------------------------------

    def _request_body(self, environ: Mapping[str, Any]) -> tuple[LimitedBody | None, int | None]:
        """The body to send and its length (None: chunked, length unknown)."""
        limit = self.server.max_body_bytes
        stream = environ["wsgi.input"]
        coding = environ.get("HTTP_TRANSFER_ENCODING")
        if coding is not None:
            _check_transfer_coding(coding, environ.get("SERVER_PROTOCOL", ""))
            length = None
        else:
            length = _content_length(environ.get("CONTENT_LENGTH"))
            if length == 0:
                return None, None
            if length > limit:
                raise BodyTooLarge(f"request body of {length} bytes exceeds the limit of {limit}")
        body = LimitedBody(stream, limit, length)
        if self.server.min_upload_rate:
            body.require_rate(self.server.min_upload_rate, self.server.upload_grace)
        return body, length

    def _upstream_headers(
        self,
        exchange: Exchange,
        environ: Mapping[str, Any],
        spec: RouteSpec,
        identity: Identity | None,
    ) -> dict[str, str]:
        """Client headers minus hop-by-hop and gateway-owned ones, then the gateway's own."""
        headers = dict(forwardable(request_headers(environ), self.owned))
        info = exchange.client
        assert info is not None
        host = exchange.authority.host if exchange.authority else ""
        if spec.upstream is not None and host and self.clients[spec.upstream].spec.preserve_host:
            headers["Host"] = host
        # Otherwise no Host here: each target's own host:port is written when the request is
        # sent to the target the balancer picked (gw.upstream.wire.request_head).
        headers["X-Forwarded-For"] = info.forwarded_for
        headers["X-Forwarded-Proto"] = info.proto
        if host:
            headers["X-Forwarded-Host"] = host
        headers["X-Real-IP"] = info.ip
        headers["X-Request-Id"] = exchange.request_id
        trace = tracing.propagate(environ.get("HTTP_TRACEPARENT"), environ.get("HTTP_TRACESTATE"))
        headers["traceparent"] = trace.traceparent
        if trace.tracestate:
            headers["tracestate"] = trace.tracestate
        exchange.extra["trace_id"] = trace.trace_id
        if identity is not None:
            headers.update(identity.headers())
        transformer = self.config.transformer
        rules = transformer.for_path(exchange.path) if transformer else None
        if rules is not None:
            headers = rules.request_headers(headers)
        return headers

    def error_outcome(self, exchange: Exchange, ex: GatewayError) -> Outcome:
        """Render a gateway error as the one JSON error shape."""
        exchange.status = ex.status
        exchange.error = ex.code
        body = json.dumps(ex.to_dict(exchange.request_id)).encode()
        headers = [("Content-Type", _JSON), ("Content-Length", str(len(body))), *ex.headers.items()]
        if ex.status in _CLOSING:
            # APPSEC: a malformed or unread request ends its connection (as nginx and
            # gunicorn do): nothing the client sent after it is read as another request.
            headers.append(("Connection", "close"))
        return Outcome(ex.status, self._decorate(exchange, headers), [body])

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

    def _finish(self, exchange: Exchange, outcome: Outcome) -> Outcome:
        """Log a response the gateway produced itself (no upstream body to wait for)."""
        exchange.status = outcome.status
        exchange.bytes_sent = sum(len(b) for b in outcome.body)
        if exchange.method == "HEAD":
            outcome.body = []
        self._egress(exchange)
        return outcome

    def _local_answer(self, exchange: Exchange, environ: Mapping[str, Any]) -> Outcome | None:
        """Metrics, health and ready, answered by gw itself; None for everything else.

        With ``GW_METRICS_BIND`` the metrics path is served on that listener alone, and that
        listener serves nothing else (404).
        """
        on_metrics_listener = (
            self.metrics_port is not None and environ.get("SERVER_PORT") == self.metrics_port
        )
        scrape = self.metrics is not None and exchange.path == self.config.metrics.path
        if scrape and (self.metrics_port is None or on_metrics_listener):
            return self._scrape(exchange, environ)
        builtin = self.builtins.get(exchange.path)
        if builtin is not None:
            return builtin(exchange)
        if on_metrics_listener:
            raise RouteNotFound("the metrics listener serves only metrics, health and ready")
        return None

    def _scrape(self, exchange: Exchange, environ: Mapping[str, Any]) -> Outcome:
        """Answer a Prometheus scrape, but only to the peers ``metrics.allow_from`` lists."""
        assert self.metrics is not None
        # APPSEC: the direct socket peer decides, never X-Forwarded-For: behind nginx every
        # public request arrives from nginx, so a forwarded address would prove nothing.
        if not self.config.metrics.allows(environ.get("REMOTE_ADDR") or ""):
            raise RouteNotFound("no route matches this path")
        content_type, body = self.metrics.render(environ)
        headers = [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("X-Request-Id", exchange.request_id),
        ]
        return Outcome(200, headers, [body])

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

    def _health(self, exchange: Exchange) -> Outcome:
        return _json_outcome(
            200,
            {
                "status": "healthy",
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "version": __version__,
            },
            exchange,
        )

    def _ready(self, exchange: Exchange) -> Outcome:
        return _json_outcome(
            200, {"status": "ready", "routes": len(self.config.table.ordered())}, exchange
        )


def _log_parts(exchange: Exchange, reports: list[PartReport]) -> None:
    """Name the targets the parts reached, and each part's outcome, in the access line."""
    targets = dict.fromkeys(report.target for report in reports if report.target)
    exchange.upstream_target = ",".join(targets) or None
    exchange.extra["parts"] = [report.log_fields() for report in reports]


def _balance_key(
    client: UpstreamClient, exchange: Exchange, headers: Mapping[str, str]
) -> str | None:
    """The sticky key of a ``balance: hash`` upstream: client address, user, or a header."""
    source = client.hash_source
    if source is None:
        return None
    kind, name = source
    if kind == "client_ip":
        return exchange.client.ip if exchange.client else None
    if kind == "user":
        return exchange.extra.get("user")
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), None)


def _json_outcome(status: int, payload: dict[str, Any], exchange: Exchange) -> Outcome:
    body = json.dumps(payload).encode()
    headers = [
        ("Content-Type", _JSON),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
        ("X-Request-Id", exchange.request_id),
    ]
    return Outcome(status, headers, [body])


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
