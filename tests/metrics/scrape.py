"""Read a Prometheus exposition the way a scraper does, into something a test can compare."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

Labels = frozenset[tuple[str, str]]


def samples(text: str) -> dict[tuple[str, Labels], float]:
    """Return every sample of ``text`` keyed by ``(sample name, labels)``."""
    out: dict[tuple[str, Labels], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(found: dict[tuple[str, Labels], float], name: str, **labels: str) -> float | None:
    """Return one sample's value, or None when the scrape does not have it."""
    return found.get((name, frozenset(labels.items())))


def total(found: dict[tuple[str, Labels], float], name: str, **labels: str) -> float:
    """Sum every sample called ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, have), v in found.items() if n == name and want <= have)
