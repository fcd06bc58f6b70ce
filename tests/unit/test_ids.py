"""Request and trace ids: well-formed, and never the same sequence in two forked workers."""

from __future__ import annotations

import os

from gw.core.headers import request_id
from gw.core.ids import random_hex


def test_ids_are_hex_of_the_asked_size_and_do_not_repeat() -> None:
    ids = {random_hex(16) for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(len(i) == 32 and int(i, 16) for i in ids)
    assert request_id(None).startswith("req_") and len(request_id(None)) == 24


def test_forked_workers_mint_different_ids() -> None:
    """A pre-forked master's workers share the parent's generator state unless re-seeded."""
    children = []
    for _ in range(2):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: send its first ids and leave at once
            os.close(read)
            os.write(write, " ".join(random_hex(8) for _ in range(4)).encode())
            os._exit(0)
        os.close(write)
        children.append((pid, read))
    seen = []
    for pid, read in children:
        seen.append(os.read(read, 4096).decode())
        os.close(read)
        os.waitpid(pid, 0)
    assert seen[0] != seen[1]
