"""The connections of one worker that wait for a request head: the connection cap sheds them."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gw.edge.connection import Connection


class WaitingConnections:
    """The connections of one worker that wait for a request head, longest-waiting first.

    When the worker is at its connection cap, the one that has waited longest is shed to make
    room, as nginx reuses its idle keep-alive connections when it runs out of connections. A
    connection whose request is being served (app running, body uploading) is never shed.
    """

    def __init__(self) -> None:
        # PERF: a dict keeps insertion order; adding and removing are O(1).
        self._waiting: dict[Connection, None] = {}

    def waiting(self, conn: Connection) -> None:
        self._waiting[conn] = None

    def working(self, conn: Connection) -> None:
        self._waiting.pop(conn, None)

    def __len__(self) -> int:
        return len(self._waiting)

    def shed_oldest(self) -> bool:
        """Close the connection that has waited longest; False when none waits."""
        conn = next(iter(self._waiting), None)
        if conn is None:
            return False
        del self._waiting[conn]
        conn.shed()
        return True
