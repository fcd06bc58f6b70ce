"""What gw.limits.admission tells the metrics, kept for a test to read."""

from __future__ import annotations

from collections.abc import Callable

from gw.observe.instruments import RATELIMIT_DECISIONS, RATELIMIT_MODES


def told(seen: list[tuple[str, ...]]) -> Callable[[tuple[str, str, str]], None]:
    """An ``Admission.observe`` that keeps each decision in ``seen``. Its labels must be ones
    the metric knows: ``Metrics.count_ratelimit`` counts them unchecked."""

    def observe(labels: tuple[str, str, str]) -> None:
        _, decision, mode = labels
        assert decision in RATELIMIT_DECISIONS and mode in RATELIMIT_MODES, labels
        seen.append(labels)

    return observe
