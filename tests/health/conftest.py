"""Fixtures for the health tests: a fresh table per test, a clock the test moves, and
balancers bound to that table."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from gw.health.balancer import Balancer
from gw.health.breaker import BreakerPolicy
from gw.health.choice import PassivePolicy
from gw.health.state import create
from gw.health.table import HealthTable
from tests.health.helpers import URLS, FakeClock


@pytest.fixture
def table_path(tmp_path: Path) -> str:
    path = str(tmp_path / "health.table")
    create(path, [("orders", url) for url in URLS], targets=64, upstreams=16, rows=16, stripes=4)
    return path


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def table(table_path: str, clock: FakeClock) -> Iterator[HealthTable]:
    with HealthTable.open(table_path, clock=clock) as opened:
        yield opened


@pytest.fixture
def balancer(table: HealthTable) -> Callable[..., Balancer]:
    """Build a balancer on the test's table: ``balancer(weights=..., **Balancer kwargs)``."""

    def build(
        weights: Sequence[int] = (1, 1, 1),
        urls: Sequence[str] = URLS,
        passive: PassivePolicy | None = None,
        breaker: BreakerPolicy | None = None,
        **kwargs: Any,
    ) -> Balancer:
        targets = list(zip(urls, weights, strict=True))
        return Balancer(
            "orders", targets, passive=passive, breaker=breaker, table=lambda: table, **kwargs
        )

    return build
