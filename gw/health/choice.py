"""The target one request goes to (``TargetChoice``) and the kinds of result it reports.

``Balancer.pick`` returns a ``TargetChoice``; when the exchange is over the request calls
``done`` (or ``answered``/``failed``) on it exactly once, and the balancer judges the result
by its ``PassivePolicy`` (see ``gw.health.balancer``). ``kind_of`` names the kind of an
exchange that ended with an exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gw.errors import UpstreamBadResponse
from gw.upstream.choice import CANCELLED as CANCELLED  # re-exported: one of the kinds below

if TYPE_CHECKING:
    from gw.health.balancer import Balancer
    from gw.health.layout import Slot
    from gw.health.table import HealthTable

# Kinds of result given to ``TargetChoice.done``.
OK = "ok"
CONNECT = "connect"  # refused or unreachable: nothing was sent
RESET = "reset"  # the connection broke before an answer
TIMEOUT = "timeout"
BAD_RESPONSE = "bad_response"  # not HTTP, or the body broke off
STATUS = "status"  # answered with one of the policy's failure_statuses
# CANCELLED: the exchange ended for a reason that says nothing of the target
FAILURE_KINDS = frozenset({CONNECT, RESET, TIMEOUT, BAD_RESPONSE, STATUS})


@dataclass(frozen=True)
class PassivePolicy:
    """When a target is ejected and for how long (``consecutive_failures=0`` never ejects)."""

    consecutive_failures: int = 5
    cooldown: float = 10.0
    max_cooldown: float = 300.0
    failure_statuses: frozenset[int] = frozenset({502, 503, 504})
    probe_timeout: float = 30.0  # a probe that reports nothing for this long is given up

    def __post_init__(self) -> None:
        if self.consecutive_failures < 0 or self.cooldown <= 0 or self.probe_timeout <= 0:
            raise ValueError("consecutive_failures >= 0, cooldown and probe_timeout > 0")
        if self.max_cooldown < self.cooldown:
            raise ValueError("max_cooldown must be at least cooldown")


class TargetChoice:
    """The target one request goes to; report the outcome exactly once with ``done``."""

    __slots__ = ("_balancer", "_finished", "_slot", "_table", "probe", "target_index", "trial")

    def __init__(
        self,
        balancer: Balancer,
        table: HealthTable,
        slot: Slot,
        index: int,
        probe: bool,
        trial: bool,
    ) -> None:
        """``slot``: the target's slot in ``table`` (``balancer.slots(table)[index]``)."""
        self._balancer = balancer
        self._table = table
        self._slot = slot
        self._finished = False
        self.target_index = index
        self.probe = probe  # the half-open probe of an ejected target
        self.trial = trial  # a half-open trial of the upstream's circuit breaker

    @property
    def url(self) -> str:
        return self._balancer.urls[self.target_index]

    def done(self, ok: bool, kind: str = OK) -> None:
        """Release the request's place and record its outcome; later calls do nothing.

        ``ok`` with any kind but CANCELLED is a success. A failure counts against the
        target only for the kinds in FAILURE_KINDS; other kinds (CANCELLED: the client left,
        the gateway gave up) are neutral.
        """
        if self._finished:
            return
        self._finished = True
        outcome: bool | None = None
        if ok and kind != CANCELLED:
            outcome = True
        elif not ok and kind in FAILURE_KINDS:
            outcome = False
        self._balancer.finish(self._table, self._slot, outcome, self.probe, self.trial)

    def answered(self, status: int) -> None:
        """Report an answer with ``status``: a failure when it is a failure status."""
        balancer = self._balancer
        if status in balancer.passive.failure_statuses:
            self.done(False, STATUS)
        elif not self._finished:
            # PERF: ``done(True, OK)`` without its branches: the usual end of a request.
            self._finished = True
            balancer.finish(self._table, self._slot, True, self.probe, self.trial)

    def failed(self, ex: BaseException) -> None:
        """Report an exchange that ended with ``ex`` (a gateway upstream error, usually)."""
        self.done(False, kind_of(ex))


def kind_of(ex: BaseException) -> str:
    """Return the result kind of an exchange that ended with ``ex``."""
    if isinstance(ex, TimeoutError):
        return TIMEOUT
    if isinstance(ex, UpstreamBadResponse):
        return BAD_RESPONSE
    if isinstance(ex, ConnectionResetError):
        return RESET
    if isinstance(ex, ConnectionError):  # UpstreamUnavailable, refused, unreachable
        return CONNECT
    return CANCELLED
