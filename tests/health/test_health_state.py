"""The shared table itself: what the master creates, what a reload adds, a full table, and
files that are not a health table."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from gw.health import HealthTableError, HealthUnavailable
from gw.health.snapshot import snapshot
from gw.health.state import create, register, shared
from gw.health.table import HealthTable
from tests.health.helpers import URLS
from tests.support.stripes import hold_stripe


def test_the_master_enters_every_configured_target(table_path: str) -> None:
    entries = snapshot(table_path)
    targets = sorted(
        (e["upstream"], e["target"], e["state"]) for e in entries if e["kind"] == "target"
    )
    assert targets == [("orders", url, "healthy") for url in URLS]
    assert [e["upstream"] for e in entries if e["kind"] == "upstream"] == ["orders"]


def test_targets_new_after_a_reload_take_a_slot_on_first_use(table: HealthTable) -> None:
    slot = table.target("billing", "http://10.9.9.9:80")
    assert slot.base != table.target("orders", URLS[0]).base
    again = HealthTable.open(table.path)
    try:
        assert again.target("billing", "http://10.9.9.9:80").base == slot.base
    finally:
        again.close()
    names = {(e["upstream"], e["target"]) for e in snapshot(table.path) if e["kind"] == "target"}
    assert ("billing", "http://10.9.9.9:80") in names


def test_the_same_url_in_two_upstreams_has_two_states(table: HealthTable) -> None:
    assert table.target("a", URLS[0]).base != table.target("b", URLS[0]).base


def test_a_full_table_reuses_the_slot_idle_longest(tmp_path: Path) -> None:
    path = str(tmp_path / "health.table")
    create(path, targets=4, upstreams=2, rows=4, stripes=2)
    with HealthTable.open(path) as table:
        slots = [table.target("up", f"http://t{i}") for i in range(4)]
        for i, slot in enumerate(slots):
            with table.held(slot) as base:
                table.words[base + 14] = 100 + i  # LAST_USED: t0 idle longest
        fresh = table.target("up", "http://new")
        assert fresh.base == slots[0].base
        base = table.enter(slots[0])  # t0's handle notices, takes the next idle slot
        table.leave(slots[0])
        assert base == slots[1].base
        assert table.enter(fresh) == fresh.base  # the newcomer keeps its slot
        table.leave(fresh)


def test_a_read_only_view_refuses_updates(table_path: str) -> None:
    with HealthTable.open(table_path, attach=False) as reader:
        slot = reader.target("orders", URLS[0])
        with pytest.raises(HealthUnavailable, match="read-only"):
            reader.enter(slot)


def test_a_missing_or_foreign_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HealthTableError, match="cannot open"):
        HealthTable.open(str(tmp_path / "missing"))
    foreign = tmp_path / "foreign"
    foreign.write_bytes(b"x" * 4096)
    with pytest.raises(HealthTableError, match="not a gw health table"):
        HealthTable.open(str(foreign))


def test_a_symlink_is_never_followed(tmp_path: Path, table_path: str) -> None:
    link = tmp_path / "link.table"
    os.symlink(table_path, link)
    with pytest.raises(HealthTableError):
        HealthTable.open(str(link))


def test_a_worker_opens_the_masters_table_from_the_runtime_dir(
    table_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GW_RUNTIME_DIR", os.path.dirname(table_path))
    monkeypatch.setattr("gw.health.state._SHARED", None)
    table = shared()
    assert table.path == table_path
    assert shared() is table
    table.close()
    monkeypatch.setattr("gw.health.state._SHARED", None)


def test_shapes_out_of_range_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        create(str(tmp_path / "t"), targets=0)
    with pytest.raises(ValueError):
        create(str(tmp_path / "t"), stripes=0)


def test_the_master_can_enter_the_targets_of_a_reloaded_config(table_path: str) -> None:
    register(table_path, [("orders", URLS[0]), ("billing", "http://10.8.8.8:80")])
    entries = snapshot(table_path)
    assert len([e for e in entries if e["kind"] == "target"]) == 4
    assert {e["upstream"] for e in entries if e["kind"] == "upstream"} == {"orders", "billing"}


@pytest.mark.parametrize("stopped", [False, True], ids=["busy", "stopped"])
def test_a_slot_lock_not_taken_in_time_is_health_unavailable(
    table_path: str, stopped: bool
) -> None:
    """A busy or a stopped holder of a slot's stripe: the health state is unavailable (callers
    lose one sample), never a rate-limiter error."""
    with HealthTable.open(table_path, deadline=0.05) as table:
        slot = table.target("orders", URLS[0])
        child = hold_stripe(table_path + ".lock", slot.stripe)
        try:
            if stopped:
                os.kill(child.pid, signal.SIGSTOP)
                time.sleep(0.2)
            with pytest.raises(HealthUnavailable, match="health table") as caught:
                table.enter(slot)
            assert not isinstance(caught.value, HealthTableError)
        finally:
            child.kill()
            child.wait()
