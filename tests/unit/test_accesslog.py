"""Access lines are batched, complete, in order, written within ``MAX_WAIT`` by the background
flusher and at exit, and a batch that cannot be written is reported, never dropped silently."""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from gw.core.exchange import Exchange
from gw.core.forwarding import ClientInfo
from gw.observe import accesslog, batches


def exchange(number: int) -> Exchange:
    done = Exchange(request_id=f"req_{number:020d}", method="GET", raw_target=f"/api/{number}")
    done.client = ClientInfo("10.0.0.1", "http", "10.0.0.1", False)
    done.status = 200
    return done


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read, write = os.pipe()
    os.set_blocking(read, False)
    accesslog.configure(True)
    accesslog._writer.fd = write
    yield read, write
    batches.flush()
    accesslog.configure(False)
    for fd in (read, write):
        with contextlib.suppress(OSError):
            os.close(fd)


def drain(fd: int) -> list[dict[str, object]]:
    data = b""
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    return [json.loads(line) for line in data.decode().splitlines()]


def test_lines_wait_for_their_batch_and_come_out_whole_and_in_order(
    pipe: tuple[int, int],
) -> None:
    read, _ = pipe
    for number in range(10):
        batches.add(exchange(number))
    assert drain(read) == []  # batched: nothing written at once
    lines: list[dict[str, object]] = []
    deadline = time.monotonic() + 5
    while len(lines) < 10 and time.monotonic() < deadline:
        time.sleep(batches.MAX_WAIT / 4)
        lines += drain(read)  # the background flusher writes them, with no call from here
    assert [line["request_id"] for line in lines] == [f"req_{n:020d}" for n in range(10)]
    assert all(line["status"] == 200 and line["worker"] == os.getpid() for line in lines)


def test_a_full_batch_is_written_without_waiting(pipe: tuple[int, int]) -> None:
    read, _ = pipe
    for number in range(batches.BATCH):
        batches.add(exchange(number))
    assert len(drain(read)) == batches.BATCH


def test_a_line_says_when_its_request_ended_and_how_long_it_took(pipe: tuple[int, int]) -> None:
    """Not when its batch was written: the line is made later, from the times kept."""
    read, _ = pipe
    done = exchange(1)
    done.started -= 0.25  # it arrived 250 ms ago
    ended_at = time.time()
    batches.add(done)
    time.sleep(0.3)  # its batch is written later than it ended
    batches.flush()
    [line] = drain(read)
    assert 250 <= float(str(line["duration_ms"])) < 290
    when = datetime.datetime.strptime(str(line["time"]), "%Y-%m-%dT%H:%M:%S%z").timestamp()
    assert int(ended_at) - 1 <= when <= ended_at


def test_a_batch_that_cannot_be_written_is_reported(
    pipe: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    read, _ = pipe
    os.close(read)  # nobody reads stdout any more: the write fails with EPIPE
    batches.add(exchange(1))
    batches.add(exchange(2))
    with caplog.at_level(logging.WARNING, logger="gw"):
        batches.flush()
    assert any("2 access line(s) dropped" in r.getMessage() for r in caplog.records)


def test_lines_still_waiting_are_written_at_exit() -> None:
    code = (
        "from gw.observe import accesslog, batches\n"
        "from gw.core.exchange import Exchange\n"
        "accesslog.configure(True)\n"
        "batches.add(Exchange(request_id='req_exit_0000000000000', method='GET',"
        " raw_target='/x'))\n"
        "raise SystemExit(0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    [line] = [json.loads(text) for text in out.stdout.decode().splitlines()]
    assert line["request_id"] == "req_exit_0000000000000"


ODD = ["plain", "é ünïcödé", 'quote " back\\slash', "ctl \x00\x1f\x7f", "\ud800 lone", "😀", ""]


@pytest.mark.parametrize("text", ODD)
def test_the_line_is_exactly_json_dumps_of_its_fields(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The field-by-field line (PERF) is the text json.dumps makes of the same fields (with a
    duration whose three decimals ``repr`` writes too)."""
    monkeypatch.setattr(accesslog, "_now", lambda: "2026-12-05T02:40:00+0000")
    monkeypatch.setattr(Exchange, "elapsed_ms", lambda self: 12.34567)
    for error, route, client in ((None, None, None), ("upstream_timeout", text, "::1")):
        e = Exchange(request_id=f"req-{text}", method="GET", raw_target=f"/{text}", path="")
        e.client = ClientInfo(client, "http", client, False) if client else None
        e.route, e.upstream, e.upstream_target = route, text or None, None
        e.status, e.bytes_sent, e.error = 504, 2**40, error
        e.extra.update({"trace_id": "0af7", "user": text, "parts": [{"key": text, "n": 1.5}]})
        line = accesslog.line_of(e)
        fields = accesslog._fields(e, accesslog._now(), e.elapsed_ms(), os.getpid())
        assert line == json.dumps(fields, separators=(",", ":")) + "\n"
        assert json.loads(line)["path"] == f"/{text}"


@pytest.mark.parametrize(
    ("elapsed", "text"),
    [(3.49, "3.490"), (0.0004, "0.000"), (0.0005001, "0.001"), (61000.0, "61000.000")],
)
def test_the_duration_is_written_to_the_microsecond(
    elapsed: float, text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Exchange, "elapsed_ms", lambda self: elapsed)
    line = accesslog.line_of(Exchange(request_id="req-1", method="GET", raw_target="/x"))
    assert f'"duration_ms":{text},' in line
    assert json.loads(line)["duration_ms"] == round(elapsed, 3)


def test_a_stage_field_named_like_a_base_field_replaces_it() -> None:
    e = Exchange(request_id="req-1", method="GET", raw_target="/x", path="/x")
    e.extra["route"] = "from-a-stage"
    line = json.loads(accesslog.line_of(e))
    assert line["route"] == "from-a-stage" and list(line).count("route") == 1
