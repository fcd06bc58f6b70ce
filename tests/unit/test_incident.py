"""A failing backend is logged once per incident, with counts (issue 13, point 8)."""

from __future__ import annotations

import logging

import pytest

from gw.observe.incident import IncidentLog

LOGGER = logging.getLogger("gw.test.incident")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER.name]


def test_an_incident_logs_its_start_a_line_per_interval_and_its_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    incidents = IncidentLog(LOGGER, "cache redis", every=10, clock=clock)
    caplog.set_level(logging.WARNING, LOGGER.name)
    for _ in range(25):  # 25 seconds of outage, 100 failures a second
        for _ in range(100):
            incidents.failed("Connection refused")
        clock.now += 1
    incidents.succeeded()
    incidents.succeeded()
    logged = lines(caplog)
    assert len(logged) == 4, logged
    assert logged[0].startswith("cache redis failed: Connection refused")
    assert "1000 failure(s) in the last 10s, 1001 since it began 10s ago" in logged[1]
    assert "1000 failure(s) in the last 10s, 2001 since it began 20s ago" in logged[2]
    assert (
        logged[3] == "cache redis recovered after 25.0s: 2500 failure(s) in all during the incident"
    )


def test_a_new_incident_starts_counting_afresh(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    incidents = IncidentLog(LOGGER, "rate limiter", every=10, clock=clock)
    caplog.set_level(logging.WARNING, LOGGER.name)
    incidents.failed("timeout", "admitting (fail_open)")
    incidents.succeeded()
    clock.now += 60
    incidents.failed("refused")
    incidents.failed("refused")
    clock.now += 2
    incidents.succeeded()
    logged = lines(caplog)
    assert logged[0] == (
        "rate limiter failed: timeout; admitting (fail_open) "
        "(further failures are counted, not logged each)"
    )
    assert logged[1].endswith("1 failure(s) in all during the incident")
    assert logged[2].startswith("rate limiter failed: refused")
    assert logged[3] == "rate limiter recovered after 2.0s: 2 failure(s) in all during the incident"
    assert len(logged) == 4


def test_successes_without_an_incident_log_nothing(caplog: pytest.LogCaptureFixture) -> None:
    incidents = IncidentLog(LOGGER, "cache redis")
    caplog.set_level(logging.DEBUG, LOGGER.name)
    for _ in range(1000):
        incidents.succeeded()
    assert lines(caplog) == [] and not incidents.failing
