"""The authentication stage: verify the caller once, at the edge, by the route's policy."""

from __future__ import annotations

from dataclasses import dataclass

from gw.auth.authenticator import Authenticator
from gw.auth.settings import RoutePolicy
from gw.auth.throttle import FailureThrottle
from gw.core.request import Request
from gw.errors import Unauthorized


@dataclass(frozen=True)
class AuthStage:
    authenticator: Authenticator
    throttle: FailureThrottle | None = None

    def apply(self, request: Request, policy: RoutePolicy) -> None:
        """Set ``request.identity`` (None where the route needs no caller); 401/403 otherwise.

        An address that failed too often gets 429 before its credential is read (see
        ``gw.auth.throttle`` for what counts and why a valid credential waits too).
        """
        client = request.client.ip
        throttle = self.throttle
        if throttle is not None and self.authenticator.applies(request.path, policy):
            throttle.check(client)
        try:
            identity = self.authenticator.authenticate(
                request.path,
                request.headers.items(),
                policy,
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
