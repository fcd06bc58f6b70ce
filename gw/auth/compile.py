"""Compile ``auth:`` and the routes' ``auth:`` policies into the authenticate stage.

Runs at start-up (and in ``gw check``); problems are added to the caller's list, each with its
location (``routes[2].auth.issuers[0]: ...``), so that one pass reports them all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gw.auth.authenticator import Authenticator
from gw.auth.exclusions import GuardedRoute, exclusion_conflicts
from gw.auth.settings import AuthSettings
from gw.auth.throttle import FailureThrottle
from gw.errors import ConfigError
from gw.limits import Limiter


def compile_authenticator(
    settings: AuthSettings | None, routes: Sequence[GuardedRoute], problems: list[str]
) -> Authenticator | None:
    """Build the authenticator; report route policies it cannot serve.

    Args:
        routes: every route with an explicit ``auth:``, in file order.
    """
    if settings is None:
        problems += [
            f"{route.where}.auth: this route has an auth policy but the gateway has no 'auth' block"
            for route in routes
            if route.policy.effective_mode != "none"
        ]
        return None
    problems += _route_policy_problems(settings, routes)
    try:
        return Authenticator(settings)
    except ConfigError as ex:
        problems += [f"auth: {p}" for p in ex.problems]
        return None


def _route_policy_problems(auth: AuthSettings, routes: Sequence[GuardedRoute]) -> list[str]:
    """Issuers a route names that do not exist; exclusions that would open a guarded route."""
    problems = []
    for route in routes:
        problems += [f"{route.where}.auth.{p}" for p in auth.policy_problems(route.policy)]
    return problems + exclusion_conflicts(auth.exclude_paths, routes)


def compile_throttle(
    settings: AuthSettings | None, open_limiter: Callable[[], Limiter] | None
) -> FailureThrottle | None:
    """Count failed authentications in the rate limiter's backend (the shared table by
    default, or ``rate_limiting.backend``'s Redis); None without ``auth.failure_limit``."""
    if settings is None or settings.failure_limit is None:
        return None
    assert open_limiter is not None  # an unknown backend was reported by compile_admission
    return FailureThrottle.from_settings(settings.failure_limit, open_limiter)
