"""The answer to one request: ``start_response``, the response head, and the body's framing.

Framing of answers: the app's Content-Length, else chunked for HTTP/1.1, else the end of the
connection. An app body that fails part-way (an upstream that broke off) ends the connection
without the final chunk, so the client sees a broken response, never a clean short one.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterable
from email.utils import formatdate
from typing import Any

from gw.core.bounded import remember
from gw.core.headers import HOP_BY_HOP  # HOP_BY_HOP: not for a WSGI app (PEP 3333)
from gw.edge.request import Message
from gw.edge.tunnel import Switch
from gw.host.process import send_all

log = logging.getLogger("gw.serve")

_NO_BODY_STATUSES = frozenset({204, 304})
# The fields the head treats apart, by lower-case name: hop-by-hop ones are the edge's own
# (Connection is read for a close), Content-Length frames the body, Date is not doubled.
_PLAIN, _HOP, _CONNECTION, _LENGTH, _DATE = "plain", "hop", "connection", "length", "date"
_KINDS = {
    **dict.fromkeys(HOP_BY_HOP, _HOP),
    "connection": _CONNECTION,
    "content-length": _LENGTH,
    "date": _DATE,
}
# The names met, in the spelling met (each bounded): the plain ones, and the others' kinds.
_PLAIN_NAMES: dict[str, str] = {}
_SEEN: dict[str, str] = {}


def _kind(name: str) -> str:
    """The kind of header ``name``, kept for its spelling while there is room."""
    kind = _KINDS.get(name.lower(), _PLAIN)
    return remember(_PLAIN_NAMES if kind is _PLAIN else _SEEN, name, kind)


_END: Any = object()  # next()'s answer at the end of a body


def _not_compiled(*args: Any) -> None:
    """The compiled form's answer where it is not built: ``Reply._head_made_here`` makes the
    head."""
    return None


# What an answer's head is made of: status, fields, the names met, the date, whether the
# request was HTTP/1.1, whether the connection may be kept, whether the answer has no body.
_HeadParts = tuple[
    str, list[tuple[str, str]], dict[str, str], dict[str, str], str, bool, bool, bool
]
# PERF: the head made in C (gw/edge/_replyfields.c): the same bytes and framing as
# ``Reply._head_made_here``, which runs wherever that one declines (a name not met before, a
# Connection field, an odd length or status, a 101) or where gw was installed without a C
# compiler.
_compiled_head: Callable[..., tuple[bytes, int | None, bool, bool, bool] | None]
# PERF: the whole answer made in C when the body is a list of bytes (an answer in hand): the
# head as ``_compiled_head`` makes it and the body framed as ``Reply._frame`` frames it, sent
# in one piece. ``Reply.send``'s Python form, its judge, sends everything it declines.
_compiled_answer: Callable[..., tuple[bytes, bool, int, int | None, bool, bool] | None]
try:
    from gw.edge import _replyfields
except ImportError:
    _compiled_head = _compiled_answer = _not_compiled
else:
    _replyfields.configure(_HOP, _LENGTH, _DATE)
    _compiled_head = _replyfields.head
    _compiled_answer = _replyfields.answer


class Reply:
    """The answer to one request: ``start_response`` and the framing of the body."""

    # PERF: the state every answer starts with is the class's (immutable values only); an
    # answer's own is set on it as it goes, with no store per field for each request.
    started = False  # the head has been sent
    _status = ""
    _length: int | None = None
    _chunked = False
    _sent = 0
    switch: Switch | None = None  # an upgrade request's (gw.edge.tunnel)
    switched = False  # a 101 head was written: the tunnel's bytes follow

    def __init__(self, sock: socket.socket, message: Message, keep_alive: bool) -> None:
        self.sock = sock
        self.message = message
        self.keep_alive = keep_alive and message.keep_alive and not message.upgrade
        self._headers: list[tuple[str, str]] = []
        self._bodyless = message.method == "HEAD"

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None and self.started:
            raise exc_info[1].with_traceback(exc_info[2])
        self._status = status
        self._headers = headers
        return self._write_legacy

    def send(self, body: Iterable[bytes]) -> None:
        """Send the head and the body; end the connection if the body fails part-way.

        Raises:
            OSError: writing to the client failed.
            Exception: the app failed before calling ``start_response``.
        """
        if not self.started:
            # PERF: one C call and one write for the usual answer; None for anything unusual
            # (a body that is not a list of bytes, a head ``_head`` makes in Python), and the
            # Python form below then sends it, nothing having changed.
            made = _compiled_answer(*self._head_parts(), body)
            if made is not None:
                data, self.keep_alive, self._sent, self._length, self._chunked, self._bodyless = (
                    made
                )
                send_all(self.sock, data)
                self.started = True
                return
        pieces = iter(body)
        while True:
            try:
                # PERF: with a default, an iterator that ends raises no StopIteration here
                data = next(pieces, _END)
            except Exception as ex:
                if not self._status:
                    raise
                log.warning("the answer broke off: %s", ex)
                self.keep_alive = False  # no final chunk, no full length: visibly broken
                if not self.started:
                    self._write(b"")
                return
            if data is _END:
                break
            if data:
                self._write(data)
        if not self.started:
            self._write(b"")  # the head alone: the body is empty
        if self._chunked:
            # APPSEC: the final chunk after an empty body too: without it the client would
            # read the next answer on the connection as this one's body.
            send_all(self.sock, b"0\r\n\r\n")
        if self._length is not None and self._sent < self._length and not self._bodyless:
            self.keep_alive = False  # short body: the client must see the connection end

    def _write_legacy(self, data: bytes) -> None:
        if data:
            self._write(data)

    def _write(self, data: bytes) -> None:
        if not self.started:
            send_all(self.sock, self._head() + self._frame(data))
            self.started = True
            return
        send_all(self.sock, self._frame(data))

    def _frame(self, data: bytes) -> bytes:
        if not data or self._bodyless:
            return b""
        if self._length is not None:
            room = self._length - self._sent
            if len(data) > room:
                data = data[:room]  # never more than announced
                self.keep_alive = False
        self._sent += len(data)
        if self._chunked:
            return b"%x\r\n%s\r\n" % (len(data), data)
        return data

    def _head_parts(self) -> _HeadParts:
        """What the compiled forms make the head of (``_compiled_head``'s arguments)."""
        return (
            self._status,
            self._headers,
            _PLAIN_NAMES,
            _SEEN,
            _http_date(),
            self.message.version == "1.1",
            self.keep_alive,
            self._bodyless,
        )

    def _head(self) -> bytes:
        """The answer's head; it sets the body's framing and the connection's fate.

        Raises:
            ValueError: a status or field the head cannot carry (see ``_head_made_here``).
        """
        made = _compiled_head(*self._head_parts())
        if made is None:
            return self._head_made_here()
        head, self._length, self._chunked, self._bodyless, self.keep_alive = made
        return head

    def _head_made_here(self) -> bytes:
        """``_head`` in Python: the judge of its compiled form, and every head that one
        declines."""
        status = self._status
        code = int(status[:3])
        if code in _NO_BODY_STATUSES or code < 200:
            self._bodyless = True
        fields, self._length, has_date = self._fields()
        ours: list[str] = []  # gw's own fields, after the app's
        if not has_date:
            ours.append(f"Date: {_http_date()}")
        if self._length is None and not self._bodyless:
            if self.message.version == "1.1":
                self._chunked = True
                ours.append("Transfer-Encoding: chunked")
            else:
                self.keep_alive = False  # HTTP/1.0: the end of the connection ends the body
        if code == 101:
            ours += self._switching()
        else:
            # Said in both cases, as gunicorn does: clients and tests read it either way.
            ours.append("Connection: keep-alive" if self.keep_alive else "Connection: close")
        # APPSEC: the app's status must not split the answer into more lines (nor, below, its
        # fields: ``_fields`` and its compiled form never write a CR or LF).
        probe = status + "".join(ours)
        if "\n" in probe or "\r" in probe:
            raise ValueError("a response header contains CR or LF")
        return b"".join(
            (
                f"HTTP/1.1 {status}\r\n".encode("latin-1"),
                fields,
                ("\r\n".join(ours) + "\r\n\r\n").encode("latin-1"),
            )
        )

    def _fields(self) -> tuple[bytes, int | None, bool]:
        """The app's fields as written (each with its CRLF), the Content-Length they state,
        and whether one is Date. Hop-by-hop fields are dropped; a Connection field's
        ``close`` ends the connection after this answer.

        Raises:
            ValueError: two Content-Lengths, or a CR or LF in a name or value written.
        """
        lines: list[str] = []
        length: int | None = None
        has_date = False
        for name, value in self._headers:
            # PERF: a plain name met before (nearly every one) is one set lookup, its hash
            # already made by Falcon's dict; no lower-case copy hashed anew.
            if name not in _PLAIN_NAMES:
                kind = _SEEN.get(name) or _kind(name)
                if kind is _HOP or kind is _CONNECTION:
                    if kind is _CONNECTION and "close" in value.lower():
                        self.keep_alive = False
                    continue
                if kind is _LENGTH:
                    if length is not None:
                        # APPSEC: two lengths would frame the answer two ways for the client.
                        raise ValueError("a response has more than one Content-Length")
                    length = int(value)
                elif kind is _DATE:
                    has_date = True
            lines.append(f"{name}: {value}")
        # APPSEC: the app's header names and values must not split the answer into more lines
        # (a CR or LF from an upstream value would forge headers or a second response).
        probe = "".join(lines)
        if "\n" in probe or "\r" in probe:
            raise ValueError("a response header contains CR or LF")
        return "".join(f"{line}\r\n" for line in lines).encode("latin-1"), length, has_date

    def _switching(self) -> list[str]:
        """The Upgrade fields of a 101 head: only for a tunnel the app offered.

        APPSEC: hop-by-hop fields from the app are never written (see ``_head``); a 101 says
        which protocol follows only when the edge will relay one (``gw.edge.tunnel``).
        """
        tunnel = self.switch.tunnel if self.switch is not None else None
        if tunnel is None:
            raise ValueError("a 101 answer without a tunnel to relay")
        self.keep_alive = False
        self.switched = True
        return [f"Upgrade: {tunnel.protocol}", "Connection: Upgrade"]


_date_cache = (0, "")


def _http_date() -> str:
    """Return the current HTTP date, formatted once per second (PERF)."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]
