"""The host's shared files: written whole, allocated, never opened through a symlink."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from gw.host import files


def test_a_table_file_is_allocated_whole_with_its_header_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "t.table"
    files.write_atomically(str(path), b"HEADER", 64 * 1024, 0o640, None)
    info = path.stat()
    assert info.st_size == 64 * 1024 and info.st_blocks * 512 >= 64 * 1024  # not sparse
    assert info.st_mode & 0o777 == 0o640
    assert path.read_bytes()[:8] == b"HEADER\0\0"
    assert [p.name for p in tmp_path.iterdir()] == ["t.table"]  # no temporary file left


def test_a_replaced_table_leaves_an_open_mapping_on_the_old_file(tmp_path: Path) -> None:
    path = str(tmp_path / "t.table")
    files.write_atomically(path, b"old", 4096, 0o600, None)
    fd = files.open_existing(path)
    mapped = files.map_shared(fd, 4096)
    os.close(fd)
    files.write_atomically(path, b"new", 4096, 0o600, None)
    assert mapped[:3] == b"old" and Path(path).read_bytes()[:3] == b"new"
    mapped.close()


def test_a_symlink_planted_in_place_of_a_shared_file_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"secret")
    (tmp_path / "t.table").symlink_to(victim)
    with pytest.raises(OSError) as opened:
        files.open_existing(str(tmp_path / "t.table"))
    assert opened.value.errno == errno.ELOOP
    (tmp_path / "locks").symlink_to(tmp_path / "nowhere")
    files.ensure_file(str(tmp_path / "locks"))
    assert not (tmp_path / "nowhere").exists()  # not created through the link
    with pytest.raises(OSError):
        files.open_existing(str(tmp_path / "locks"))


def test_ensure_file_keeps_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "index"
    assert files.ensure_file(str(path)) == str(path)
    assert path.stat().st_mode & 0o777 == 0o600
    path.write_bytes(b"kept")
    files.ensure_file(str(path))
    assert path.read_bytes() == b"kept"


def test_a_replaced_file_carries_its_mtime_and_a_failure_leaves_no_temporary(
    tmp_path: Path,
) -> None:
    path = tmp_path / "entry"
    files.replace_file(str(path), b"body", mtime=2_000_000_000.0, temp_prefix=".tmp-")
    assert path.read_bytes() == b"body" and path.stat().st_mtime == 2_000_000_000.0
    (tmp_path / "folder").mkdir()
    with pytest.raises(IsADirectoryError):
        files.replace_file(str(tmp_path / "folder"), b"x", mtime=0.0, temp_prefix=".tmp-")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry", "folder"]
    with pytest.raises(FileNotFoundError):
        files.replace_file(str(tmp_path / "gone" / "e"), b"x", mtime=0.0, temp_prefix=".tmp-")


def test_a_lock_file_is_paired_by_its_magic_and_salt(tmp_path: Path) -> None:
    path = str(tmp_path / "t.lock")
    files.write_atomically(path, files.lock_header(b"GWXXLCK\0", b"s" * 16), 64, 0o600, None)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert files.lock_salt(fd, b"GWXXLCK\0") == b"s" * 16
        assert files.lock_salt(fd, b"GWYYLCK\0") == b""
    finally:
        os.close(fd)
