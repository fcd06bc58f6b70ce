"""A route's compiled mirror policy: where copies go, which requests are copied.

Build once: ``compile_mirror`` checks the ``mirror:`` block against the upstreams and the
route, naming the exact location of any problem.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field

from gw.mirror.settings import MirrorSettings
from gw.upstream.spec import UpstreamSpec

_SCALE = 10_000  # percent in hundredths


@dataclass(frozen=True)
class MirrorPolicy:
    """Copy ``percent`` of a route's requests to ``upstream``.

    ``main_base`` and ``shadow_base`` are the base paths of the route's upstream and of the
    shadow: a copy's path is the proxied path with the one swapped for the other.
    """

    upstream: str
    percent: float
    max_body_bytes: int
    max_in_flight: int
    main_base: str = ""
    shadow_base: str = ""
    _counter: itertools.count[int] = field(default_factory=itertools.count, compare=False)

    def sampled(self) -> bool:
        """Whether this request is copied: exactly ``percent`` of every run of requests, spread
        evenly (the n-th request is copied when n * percent crosses a multiple of 100).

        Deterministic, unlike Envoy's random draw, so the share holds for few requests too.
        ``next()`` on an ``itertools.count`` is atomic, so threads never share a number.
        """
        share = round(self.percent * 100)
        n = next(self._counter)
        return (n + 1) * share // _SCALE > n * share // _SCALE

    def path(self, proxied: str) -> str:
        """The copy's origin-form target, from the one sent to the route's upstream."""
        return self.shadow_base + proxied.removeprefix(self.main_base)


def compile_mirror(
    settings: MirrorSettings,
    route_upstream: str | None,
    upstreams: Mapping[str, UpstreamSpec],
    where: str,
    problems: list[str],
) -> MirrorPolicy | None:
    """The route's policy; None, with the problem appended, when it cannot be served."""
    shadow = upstreams.get(settings.upstream)
    if shadow is None:
        known = ", ".join(sorted(u for u in upstreams if "://" not in u)) or "none defined"
        problems.append(
            f"{where}.mirror.upstream: no upstream named {settings.upstream!r} (known: {known})"
        )
        return None
    if route_upstream is None:
        problems.append(f"{where}.mirror: only a route with an upstream can be mirrored")
        return None
    if settings.upstream == route_upstream:
        problems.append(f"{where}.mirror.upstream: is the route's own upstream")
        return None
    main = upstreams[route_upstream]
    return MirrorPolicy(
        settings.upstream,
        settings.percent,
        settings.max_body_bytes,
        settings.max_in_flight,
        main.targets[0].base_path,
        shadow.targets[0].base_path,
    )
