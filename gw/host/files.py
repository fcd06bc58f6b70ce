"""Files the workers of one host share: written whole and renamed into place, then mapped.

The tables (rate limits, health) are a data file and a lock file created by the master
before it forks: ``write_atomically`` makes each one, every block allocated, and renames it
over the old one, so workers of an older generation keep their own (now unlinked) files.
A lock file starts with a header (``lock_header``) whose salt pairs it with its data file;
``lock_salt`` reads it back. Workers open a data file with ``open_existing`` and map it with
``map_shared``. The response cache writes each entry with ``replace_file``.

They all live in a shared directory (``/dev/shm`` or the runtime directory), so none of
them follows a symlink. Pure standard library; errors are ``OSError``, which each feature
translates into its own.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import secrets
import struct
import tempfile

_LOCK_HEADER = struct.Struct("@8s16s")  # magic, salt
LOCK_HEADER_SIZE = _LOCK_HEADER.size


def write_atomically(
    path: str, header: bytes, size: int, mode: int, owner: tuple[int, int] | None
) -> None:
    """Write a zero-filled file of ``size`` bytes starting with ``header``, then rename it.

    Every block of the file is allocated here (``posix_fallocate``), never left sparse: a
    worker that stores into a page of a mapped file that has no block behind it, on a full
    tmpfs, dies of SIGBUS. So a full directory can only fail this call, with OSError
    (ENOSPC), before anything is mapped. ``owner`` (uid, gid) hands the file to the user
    the workers run as.
    """
    temp = f"{path}.{secrets.token_hex(6)}.tmp"
    # APPSEC: O_EXCL on a random name: nothing planted in a shared directory is followed.
    fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        os.posix_fallocate(fd, 0, size)
        os.pwrite(fd, header, 0)
        if owner is not None:
            os.fchown(fd, *owner)
        os.fchmod(fd, mode)
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise
    finally:
        os.close(fd)


def open_existing(path: str, *, writable: bool = True) -> int:
    """Open an existing shared file (close-on-exec), refusing symlinks; return its descriptor.

    Raises:
        OSError: it is missing, a symlink (ELOOP), or not accessible.
    """
    # APPSEC: O_NOFOLLOW, so that a symlink planted in a shared directory such as /dev/shm
    # cannot point the workers at another file.
    flags = (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC | os.O_NOFOLLOW
    return os.open(path, flags)


def map_shared(fd: int, size: int, *, writable: bool = True) -> mmap.mmap:
    """Map the first ``size`` bytes of ``fd``, shared with every process that maps the file.

    The descriptor may be closed afterwards: the mapping keeps its own.
    """
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    return mmap.mmap(fd, size, mmap.MAP_SHARED, prot)


def ensure_file(path: str) -> str:
    """Create an empty ``path`` (0600) if nothing is there yet; return it.

    Nothing is created through a symlink: one already in its place is left as it is, and
    ``open_existing`` (or ``O_NOFOLLOW``) then refuses it.

    Raises:
        OSError: it cannot be created.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return path
    os.close(fd)  # a brand-new file: no lock of this process can be on it yet
    return path


def replace_file(path: str, data: bytes, *, mtime: float, temp_prefix: str) -> None:
    """Write ``data`` to ``path`` atomically: readers see the old file or the new, never half.

    The file is written under a fresh ``temp_prefix`` name in the same folder, its mtime set
    to ``mtime``, then renamed over ``path``; on failure the temporary file is removed.

    Raises:
        OSError: the folder is missing (FileNotFoundError) or full, or the rename failed.
    """
    # APPSEC: mkstemp creates a fresh 0600 file with O_EXCL and O_NOFOLLOW.
    fd, temp = tempfile.mkstemp(prefix=temp_prefix, dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.utime(temp, (mtime, mtime))
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def lock_header(magic: bytes, salt: bytes) -> bytes:
    """Return the header of a new lock file: ``magic`` names the table, ``salt`` its data file."""
    return _LOCK_HEADER.pack(magic, salt)


def lock_salt(fd: int, magic: bytes) -> bytes:
    """Return the salt written in a lock file, or b"" if its header is not ``magic``'s."""
    raw = os.pread(fd, _LOCK_HEADER.size, 0).ljust(_LOCK_HEADER.size, b"\0")
    found, salt = _LOCK_HEADER.unpack(raw)
    return salt if found == magic else b""
