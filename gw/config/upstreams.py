"""The ``upstreams:`` block (``UpstreamSettings``: the transport's timeouts, pool, retries and
TLS joined with gw.health's balancing and health checks) and its compile into the
``UpstreamSpec``s the transport uses.

Runs at start-up (and in ``gw check``); problems are added to the caller's list, each with its
location (``upstreams.orders.targets[1]: ...``). TLS files are loaded here, so a bad file
refuses the config, never a request.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import Field

from gw.core.retry import RetryPolicy
from gw.health.settings import UpstreamHealthSettings
from gw.upstream.settings import STRICT, RetrySettings, Seconds, UpstreamTlsSettings
from gw.upstream.spec import Target, UpstreamSpec, parse_target
from gw.upstream.tls import TlsClient, build_client


class UpstreamSettings(UpstreamHealthSettings):
    """One named upstream service (``upstreams: {name: ...}``): its targets, balancing and
    health (see gw/health/settings.py), timeouts, pool and retries."""

    model_config = STRICT

    connect_timeout: Seconds = 2.0
    read_timeout: Seconds = 20.0
    pool_size: int = Field(
        default=512,
        ge=1,
        le=4096,
        description="Idle kept-alive connections kept per target, per worker: the cap on the "
        "connections a burst leaves open for the next (Kong's default; idle_timeout closes "
        "them when the burst is over). A lower value closes the connections of a burst above "
        "it, and the next burst connects again.",
    )
    idle_timeout: Seconds = Field(
        default=4.0,
        description="Seconds an idle kept-alive connection may wait for reuse; older ones are "
        "closed. Keep it below the upstream's own keep-alive timeout (often 5 s).",
    )
    max_connections: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="Connections in use at once per target, per worker; a request over it "
        "waits up to connect_timeout for one, then gets 503 upstream_busy. Omit: no cap.",
    )
    tls: UpstreamTlsSettings | None = Field(
        default=None, description="TLS to https targets: CA, client certificate, name."
    )
    preserve_host: bool = Field(
        default=False, description="Send the client's Host instead of the target's."
    )
    retries: RetrySettings = RetrySettings()


def compile_upstreams(
    named: Mapping[str, tuple[str, UpstreamSettings]], problems: list[str]
) -> dict[str, UpstreamSpec]:
    """Compile each upstream; leave out those with a problem.

    Args:
        named: ``name -> (location, settings)``; the location is where the upstream is
            written (``upstreams.orders``, ``servers[0].url``, ``routes[2].upstream``).
    """
    return {
        name: spec
        for name, (where, up) in named.items()
        if (spec := _upstream_spec(name, where, up, problems)) is not None
    }


def upstream_for_url(url: str) -> UpstreamSettings:
    """An upstream given as one URL (seed 000 servers, seed 003 routes), with the defaults."""
    return UpstreamSettings.model_validate({"targets": [url]})


def _upstream_spec(
    name: str, where: str, up: UpstreamSettings, problems: list[str]
) -> UpstreamSpec | None:
    targets = []
    urls = [url for url, _ in up.weighted_targets()]
    for i, url in enumerate(urls):
        location = where if where.endswith((".url", ".upstream")) else f"{where}.targets[{i}]"
        try:
            targets.append(parse_target(url))
        except ValueError as ex:
            problems.append(f"{location}: {ex}")
    if len(targets) != len(urls):
        return None
    if len({t.base_path for t in targets}) > 1:
        problems.append(f"{where}.targets: every target must have the same base path")
        return None
    tls, tls_problems = _tls_client(where, up, targets)
    problems.extend(tls_problems)  # the spec is still returned: routes naming it are fine
    return UpstreamSpec(
        name,
        tuple(targets),
        up.connect_timeout,
        up.read_timeout,
        up.pool_size,
        up.preserve_host,
        retry_policy(up.retries),
        up.retries.budget_ratio,
        up.retries.budget_min_per_second,
        up,
        tls,
        up.idle_timeout,
        up.max_connections,
    )


def _tls_client(
    where: str, up: UpstreamSettings, targets: list[Target]
) -> tuple[TlsClient | None, list[str]]:
    """Build the one TLS context of an upstream with https targets (loading its files now)."""
    if not any(t.scheme == "https" for t in targets):
        if up.tls is not None:
            return None, [f"{where}.tls: applies to https:// targets, and this upstream has none"]
        return None, []
    return build_client(up.tls, where)


def retry_policy(settings: RetrySettings) -> RetryPolicy:
    """Compile ``retries:`` (an upstream's, or a route's own)."""
    return RetryPolicy(
        attempts=settings.attempts,
        retry_on=frozenset(settings.retry_on),
        statuses=frozenset(settings.statuses),
        per_try_timeout=settings.per_try_timeout,
        backoff=settings.backoff,
        max_retry_after=settings.max_retry_after,
    )
