"""Read a Prometheus exposition the way a scraper does, into something a test can compare."""

from __future__ import annotations

import time
from collections.abc import Callable

import requests
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


Found = dict[tuple[str, Labels], float]


def scrape_until(url: str, check: Callable[[Found], bool], timeout: float = 5.0) -> Found:
    """Scrape ``url`` until ``check`` holds for what it shows, or ``timeout`` passes; return the
    last scrape either way (the caller asserts on it).

    A worker writes its counts to its file within 0.1 s of counting them
    (``gw.observe.published``), so a scrape answered by another worker right after a request
    may not show it yet.
    """
    deadline = time.monotonic() + timeout
    while True:
        answer = requests.get(url, timeout=10)
        assert answer.status_code == 200, answer.status_code
        found = samples(answer.text)
        if check(found) or time.monotonic() >= deadline:
            return found
        time.sleep(0.05)


def scrape_settled(url: str, timeout: float = 5.0) -> Found:
    """Scrape ``url`` until two scrapes 0.25 s apart (more than twice the 0.1 s in which every
    worker publishes its counts) show the same samples; return the last one."""
    deadline = time.monotonic() + timeout
    found = scrape_until(url, lambda _: True)
    while time.monotonic() < deadline:
        time.sleep(0.25)
        again = scrape_until(url, lambda _: True)
        if again == found:
            break
        found = again
    return found
