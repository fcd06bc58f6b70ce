"""GW_DRAIN_TIMEOUT parsing, the limit a stopping worker sets itself, and the cut report."""

from __future__ import annotations

import pytest

from gw.core.exchange import Exchange
from gw.edge import inflight
from gw.edge.arbiter import QUIT_GRACE, drain_timeout_from_env, worker_stop_limit
from gw.errors import ConfigError


def test_drain_limit_defaults_to_five_minutes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GW_DRAIN_TIMEOUT", raising=False)
    assert drain_timeout_from_env() == 300.0


@pytest.mark.parametrize("raw", ["0", "-1", "soon", "inf", "nan", "1e999"])
def test_a_drain_limit_that_is_not_a_positive_number_is_refused(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("GW_DRAIN_TIMEOUT", raw)
    with pytest.raises(ConfigError) as refused:
        drain_timeout_from_env()
    assert refused.value.problems == [
        f"GW_DRAIN_TIMEOUT: must be a number of seconds above 0, not {raw!r}"
    ]


def test_a_stopping_worker_never_cuts_before_the_master_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GW_DRAIN_TIMEOUT", "1.5")
    assert worker_stop_limit(30) > 30 + QUIT_GRACE  # a full stop: graceful_timeout, SIGQUIT
    monkeypatch.setenv("GW_DRAIN_TIMEOUT", "600")
    assert worker_stop_limit(30) > 600 + QUIT_GRACE  # a reload: the drain limit, SIGQUIT


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def warning(self, msg: str, *args: object) -> None:
        self.lines.append(msg % args)


def test_the_cut_report_names_each_request_still_served_and_no_finished_one() -> None:
    done = Exchange(request_id="req-finished-1", method="GET", raw_target="/done")
    upload = Exchange(request_id="req-upload-1", method="POST", raw_target="/up", path="/up")
    download = Exchange(request_id="req-download-1", method="GET", raw_target="/d", path="/d")
    download.status, download.bytes_sent = 200, 1234
    for exchange in (done, upload, download):
        inflight.started(exchange)
    inflight.finished(done)
    log = Lines()
    try:
        assert inflight.report_cut(log, 42) == 2
    finally:
        inflight.finished(upload)
        inflight.finished(download)
    assert [line.split(" (")[0] for line in log.lines] == [
        "request req-upload-1 cut: worker 42 stopped while serving POST /up",
        "request req-download-1 cut: worker 42 stopped while serving GET /d",
    ]
    assert "status 200, 1234 response bytes sent" in log.lines[1]
    assert "status not sent, 0 response bytes sent" in log.lines[0]
