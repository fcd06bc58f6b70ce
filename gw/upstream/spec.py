"""What the transport is told about an upstream: its targets and how to reach them.

Frozen values compiled from the config (``gw.config.upstreams``) and shared by every thread of
a worker. Standard library only at run time, so the client never imports the config's models.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from gw.core.retry import RetryPolicy
from gw.core.rewrite import validate_prefix

if TYPE_CHECKING:
    from gw.health.settings import UpstreamHealthSettings
    from gw.upstream.tls import TlsClient

DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True)
class Target:
    """One upstream instance: where the connection pool points."""

    scheme: str
    host: str
    port: int
    base_path: str

    # PERF: both are read for every proxied request (the Host sent upstream, the access
    # line's target); a target never changes, so each is made once.
    @cached_property
    def netloc(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"

    @cached_property
    def url(self) -> str:
        return f"{self.scheme}://{self.netloc}{self.base_path}"

    def __str__(self) -> str:
        return self.url


@dataclass(frozen=True)
class UpstreamSpec:
    name: str
    targets: tuple[Target, ...]
    connect_timeout: float
    read_timeout: float
    pool_size: int
    preserve_host: bool
    retry: RetryPolicy = DEFAULT_RETRY
    budget_ratio: float = 0.2
    budget_min_per_second: float = 3.0
    health: UpstreamHealthSettings | None = None  # balancing, ejection, breaker, checks
    tls: TlsClient | None = None  # set when a target is https://
    idle_timeout: float = 4.0  # seconds a kept-alive connection may idle
    max_connections: int | None = None  # in use at once per target per worker; None: no cap

    def pairs(self) -> list[tuple[str, str]]:
        """``(upstream, target URL)`` for each target: the keys of the shared health table."""
        return [(self.name, str(t)) for t in self.targets]


def parse_target(url: str) -> Target:
    """Parse an upstream base URL (``http://host:port/base``) or raise ValueError."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{url!r} must be an http:// or https:// URL")
    if not parts.hostname or parts.username or parts.password:
        raise ValueError(f"{url!r} must name a host (and no user:password)")
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r} must not have a query or fragment")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ValueError(f"{url!r} has an invalid port") from None
    base = parts.path.rstrip("/")
    if base:
        validate_prefix(base)
    return Target(parts.scheme, parts.hostname, port, base)
