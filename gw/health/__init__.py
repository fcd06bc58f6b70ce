"""Upstream health: target balancing, passive ejection, circuit breaking and active checks,
with one state for every worker of a host.

Modules (each imported on its own, so importing this package costs nothing):

- ``gw.health.state``: the shared mmap'd table's life (``create``/``register`` in the
  master, ``shared()`` in a worker); ``gw.health.table``: a process's ``HealthTable``;
  ``gw.health.layout``: the file format and each slot's fields.
- ``gw.health.snapshot``: ``snapshot()``, the table read by the operator's tools.
- ``gw.health.balancer``: ``Balancer.pick(key) -> TargetChoice``, then ``choice.done(...)``;
  ``gw.health.choice``: the ``TargetChoice``, its result kinds and the ``PassivePolicy``.
- ``gw.health.breaker``: the per-upstream circuit breaker the balancer consults.
- ``gw.health.checker``: active checks, run by one elected worker per host.
- ``gw.health.settings``: the configuration models.

The errors below answer a request at once with a 503, without touching any target.
"""

from __future__ import annotations

from gw.errors import UpstreamError, UpstreamUnavailable

__all__ = ["CircuitOpen", "HealthTableError", "HealthUnavailable", "NoHealthyTarget"]


class NoHealthyTarget(UpstreamUnavailable):
    """Every target of the upstream is ejected or down: answer 503 now, not after a timeout.

    Warning:
        A subclass of ``UpstreamUnavailable`` (a ``ConnectionError``) so that callers that
        catch those still see it; retrying it is pointless, since nothing was sent.
    """

    status = 503
    code = "no_healthy_target"


class CircuitOpen(UpstreamError):
    """The upstream's circuit breaker is open: fail fast with 503 until it half-opens."""

    status = 503
    code = "circuit_open"


class HealthUnavailable(RuntimeError):
    """The shared health state cannot be changed now: a slot's lock was not free in time
    (or is held by a stopped process), or the table is read-only or full.

    Not a request's error: callers lose one sample or skip one count, and ``Balancer.pick``
    answers it with ``NoHealthyTarget`` (503).
    """


class HealthTableError(HealthUnavailable):
    """The shared health table is missing, foreign, damaged or of another layout version."""
