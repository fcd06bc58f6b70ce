"""The authentication stage: verify the caller once, at the edge, by the route's policy."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from gw.auth.authenticator import Authenticator
from gw.auth.errors import AuthUnavailable, Forbidden
from gw.auth.settings import RoutePolicy
from gw.auth.throttle import FailureThrottle
from gw.core.request import Request
from gw.errors import Unauthorized
from gw.observe.sampled import SampledLog

# One line per would-be rejection of a shadow policy, at most PER_SECOND per route per worker.
shadow_log = SampledLog(logging.getLogger("gw.audit"))


@dataclass(frozen=True)
class AuthStage:
    authenticator: Authenticator
    throttle: FailureThrottle | None = None
    # Told what each shadow policy would have done: (route, would_allow|would_reject, reason).
    observe_shadow: Callable[[str, str, str], None] | None = None

    def apply(self, request: Request, policy: RoutePolicy) -> None:
        """Set ``request.identity`` (None where the route needs no caller); 401/403 otherwise.

        An address that failed too often gets 429 before its credential is read (see
        ``gw.auth.throttle`` for what counts and why a valid credential waits too).
        A ``shadow`` policy never refuses and leaves the request anonymous (``_shadow``).
        """
        if policy.effective_mode == "shadow":
            self._shadow(request, policy)
            return
        if not self.authenticator.applies(request.path, policy):
            request.identity = None
            return
        client = request.client.ip
        throttle = self.throttle
        if throttle is not None:
            throttle.check(client)
        try:
            identity = self.authenticator.check_credentials(
                request.path, request.headers.items(), policy, client, request.request_id
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

    def _shadow(self, request: Request, policy: RoutePolicy) -> None:
        """Check the credential as ``required`` would; count and log the verdict, refuse nothing.

        The failure throttle is neither consulted nor fed: its 429 would be a refusal.
        """
        if not self.authenticator.applies(request.path, policy):
            return
        route = request.exchange.route or ""
        observe = self.observe_shadow or _ignore
        try:
            self.authenticator.authenticate(request.path, request.headers.items(), policy)
        except (Unauthorized, Forbidden, AuthUnavailable) as ex:
            observe(route, "would_reject", ex.reason)
            line = {
                "event": "auth_shadow",
                "decision": "would_reject",
                "status": ex.status,
                "code": ex.code,
                "reason": ex.reason,
                "route": route,
                "path": request.path[:512],
                "client": request.client.ip,
                "request_id": request.request_id,
            }
            shadow_log.write(route, line)
        else:
            observe(route, "would_allow", "")
        # APPSEC: a shadow policy grants nothing: the identity it may have verified is
        # dropped, so no identity header is sent and user-keyed limits see an anonymous
        # caller. Client copies of identity headers were already dropped at ingress
        # (Gateway.owned), whatever the route's mode.
        request.identity = None


def _ignore(route: str, decision: str, reason: str) -> None:
    pass
