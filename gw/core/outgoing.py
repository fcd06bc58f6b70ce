"""The headers an upstream receives: the client's, cleaned, then the gateway's own.

Pure module.
"""

from __future__ import annotations

from gw.core import tracing
from gw.core.headers import forwardable_by_name
from gw.core.request import Request


def upstream_headers(
    request: Request, owned: frozenset[str], preserve_host: bool
) -> dict[str, str]:
    """Client headers minus hop-by-hop and gateway-owned ones (``owned``), then the gateway's:
    the forwarding headers, the request id, the trace context and the caller's identity.

    APPSEC: every ``owned`` header (identity headers included) is dropped in every spelling,
    so only the gateway can set one; the caller's identity headers come from
    ``request.identity`` alone.
    """
    headers = forwardable_by_name(request.headers, owned)
    info = request.client
    host = request.host or ""
    if preserve_host and host:
        headers["Host"] = host
    # Otherwise no Host here: each target's own host:port is written when the request is
    # sent to the target the balancer picked (gw.upstream.wire.request_head).
    headers["X-Forwarded-For"] = info.forwarded_for
    headers["X-Forwarded-Proto"] = info.proto
    if host:
        headers["X-Forwarded-Host"] = host
    headers["X-Real-IP"] = info.ip
    headers["X-Request-Id"] = request.request_id
    fields = request.headers.by_name  # PERF: looked up by their lower-case names
    trace = tracing.propagate(fields.get("traceparent"), fields.get("tracestate"))
    headers["traceparent"] = trace.traceparent
    if trace.tracestate:
        headers["tracestate"] = trace.tracestate
    request.exchange.extra["trace_id"] = trace.trace_id
    if request.identity is not None:
        headers.update(request.identity.headers())
    return headers
