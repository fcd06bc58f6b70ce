"""The credential-guessing throttle: failed authentications counted per client address.

The pipeline asks ``check(client_ip)`` before it looks at any credential on a route that
checks them, and calls ``record_failure(client_ip)`` after a failure that ``counts(ex)``.
Failures live in one GCRA bucket per address (``auth.failure_limit``: ``limit`` per
``period``) in the rate limiter's backend, so every worker of the host (or every host, with
Redis) draws from the same budget.

What counts: a presented credential that is refused (a bad or forged token, an unknown API
key, a malformed ``Authorization``). Not counted:

- no credential at all (401 ``unauthorized``): it guesses nothing, and crawlers and
  browsers probing protected URLs would otherwise lock out everyone behind their address;
- a token whose signature verified but is stale or for someone else (expired, not yet
  valid, another audience, ``InvalidToken.signed``): the identity provider issued it, so
  it is not a guess, and single-page apps send one expired token before each refresh,
  which would throttle whole offices behind one NAT;
- 403s (a valid credential lacking a role) and 503s (keys unavailable).

Like fail2ban (which bans the address, not the account) and Keycloak's brute-force
detection (which refuses even the right password while locked), a throttled address gets
429 for *every* request to a route that checks credentials, valid credential or not, and
before the credential is read. APPSEC: if a valid credential still got through, the
attacker would keep guessing at full speed and read 200 as "found" and 429 as "wrong":
the answer must not depend on the credential while the address is throttled. A success
does not reset the count either, or one valid credential of the attacker's own would
reopen the budget. Routes that check no credential (``auth: none``, ``exclude_paths``)
stay open to the address: there is nothing to guess there.

Warning:
    The check and the count are two steps, so requests already in flight when the budget
    runs out are still evaluated: exact for sequential requests across every worker, and
    at most one extra evaluation per concurrent connection of the address.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from gw.auth.errors import InvalidToken, TooManyAuthFailures
from gw.auth.settings import FailureLimitSettings
from gw.core.forwarding import client_key
from gw.errors import Unauthorized
from gw.host import process
from gw.limits import Limiter, LimiterAdmin, LimiterUnavailable, Rate

audit_log = logging.getLogger("gw.audit")

KEY_PREFIX = "auth_failures|"


@runtime_checkable
class FailureCounter(Limiter, LimiterAdmin, Protocol):
    """A limiter backend that can also look at a bucket without taking from it."""


class FailureThrottle:
    """Count failed authentications per client address; refuse an address over budget."""

    def __init__(self, rate: Rate, open_limiter: Callable[[], Limiter]) -> None:
        self.rate = rate
        self._open_limiter = open_limiter
        self._counter: FailureCounter | None = None
        self._pid = -1

    @classmethod
    def from_settings(
        cls, settings: FailureLimitSettings, open_limiter: Callable[[], Limiter]
    ) -> FailureThrottle:
        """Compile ``auth.failure_limit``; the backend opens lazily in each worker."""
        return cls(Rate(settings.limit, settings.period, settings.burst), open_limiter)

    @staticmethod
    def counts(ex: Unauthorized) -> bool:
        """Tell whether an authentication failure is one the throttle counts (see the module)."""
        return counts(ex)

    def check(self, client_ip: str) -> None:
        """Return if ``client_ip`` may try to authenticate now.

        Raises:
            TooManyAuthFailures: the address has no failures left in its budget (429).
        """
        try:
            decision = self._backend().peek(key_for(client_ip), self.rate)
        except LimiterUnavailable as ex:
            _admitting(ex)
            return
        if decision is not None and not decision.allowed:
            raise TooManyAuthFailures(_seconds(decision.retry_after))

    def record_failure(self, client_ip: str) -> None:
        """Count one failed authentication from ``client_ip``."""
        try:
            decision = self._backend().check(key_for(client_ip), self.rate)
        except LimiterUnavailable as ex:
            _admitting(ex)
            return
        if decision.allowed and decision.remaining == 0:
            line = {"event": "auth_throttled", "client": client_ip, "limit": self.rate.limit}
            audit_log.warning(json.dumps(line, separators=(",", ":")))

    def _backend(self) -> FailureCounter:
        if self._pid != process.pid() or self._counter is None:
            limiter = self._open_limiter()
            if not isinstance(limiter, FailureCounter):
                raise TypeError(f"{type(limiter).__name__} cannot peek at a bucket")
            self._counter, self._pid = limiter, process.pid()
        return self._counter


def _admitting(ex: LimiterUnavailable) -> None:
    # APPSEC: fail open. The throttle slows guessing down; every credential is still verified
    # in full without it. Failing closed would let whoever fills the shared table, or a Redis
    # outage, refuse every authenticated request.
    audit_log.warning("auth failure throttle could not decide (%s); admitting", ex)


def counts(ex: Unauthorized) -> bool:
    """Tell whether an authentication failure is one the throttle counts (see the module)."""
    return isinstance(ex, InvalidToken) and not ex.signed


def key_for(client_ip: str) -> str:
    """Return the bucket key of a client address: the same grouping as per-client rate
    limits (``gw.core.forwarding.client_key``: IPv4 in any IPv6 form as IPv4, loopback and
    link-local whole, other IPv6 by /64, so an attacker cannot get 2**64 budgets)."""
    return KEY_PREFIX + client_key(client_ip)


def _seconds(retry_after: float) -> int:
    return max(1, math.ceil(retry_after)) if math.isfinite(retry_after) else 86400
