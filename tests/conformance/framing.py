"""Request streams for the differential framing gates: builders, the smuggling catalogue, and
h11 (a strict reference parser) reading a client's bytes.

Pure module (no sockets). A stream is a list of ``Message``; each renders to bytes, and the
mutations of the smuggling classes rewrite one message's head or body the way published
request-smuggling payloads do. Smuggled requests target ``/smuggled/...`` and carry
``X-User-Id: admin``, so that one reaching the upstream is unmistakable.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import h11

HOST = "gw.test"
TRAILER_MARK = "trailer-only"  # in the value of every trailer field the streams send


@dataclass(frozen=True)
class Message:
    """One request as raw parts: request line, header lines, body bytes (already framed)."""

    line: bytes
    headers: tuple[bytes, ...]  # whole field lines without their CRLF (a mutation may embed LF)
    body: bytes = b""
    eol: bytes = b"\r\n"

    def render(self) -> bytes:
        head = self.line + self.eol + b"".join(h + self.eol for h in self.headers) + self.eol
        return head + self.body


def smuggled(tag: str) -> bytes:
    """The request an attacker hides inside another: unauthenticated identity included."""
    return (f"GET /smuggled/{tag} HTTP/1.1\r\nHost: {HOST}\r\nX-User-Id: admin\r\n\r\n").encode(
        "latin-1"
    )


def chunk(data: bytes, extension: bytes = b"") -> bytes:
    return b"%x%s\r\n%s\r\n" % (len(data), extension, data)


def chunked(pieces: list[bytes], trailers: tuple[bytes, ...] = ()) -> bytes:
    return (
        b"".join(chunk(p) for p in pieces if p)
        + b"0\r\n"
        + b"".join(t + b"\r\n" for t in trailers)
        + b"\r\n"
    )


def request(
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    chunks: list[bytes] | None = None,
    trailers: tuple[bytes, ...] = (),
    extra: tuple[bytes, ...] = (),
    version: str = "1.1",
    host_name: bytes = b"Host",
) -> Message:
    """A well-formed request: Content-Length for ``body``, chunked for ``chunks``."""
    headers = [host_name + b": " + HOST.encode(), *extra]
    framed = b""
    if chunks is not None:
        headers.append(b"Transfer-Encoding: chunked")
        framed = chunked(chunks, trailers)
    elif body is not None:
        headers.append(b"Content-Length: %d" % len(body))
        framed = body
    line = f"{method} {path} HTTP/{version}".encode("latin-1")
    return Message(line, tuple(headers), framed)


def stream(messages: list[Message]) -> bytes:
    return b"".join(m.render() for m in messages)


# -- the smuggling classes --------------------------------------------------------------------

Mutation = Callable[[str], Message]


def _post(path: str, headers: tuple[bytes, ...], body: bytes) -> Message:
    line = f"POST {path} HTTP/1.1".encode()
    return Message(line, (b"Host: " + HOST.encode(), *headers), body)


def _te_cover(te: tuple[bytes, ...]) -> Mutation:
    """TE (possibly obfuscated) with a Content-Length that also covers a smuggled request."""

    def make(tag: str) -> Message:
        body = chunked([b"hello"]) + smuggled(tag)
        headers = (*te, b"Content-Length: %d" % len(body))
        return _post(f"/attack/{tag}", headers, body)

    return make


def _te_short(te: tuple[bytes, ...]) -> Mutation:
    """TE (possibly obfuscated) with a Content-Length that ends inside the chunked body."""

    def make(tag: str) -> Message:
        inner = smuggled(tag)
        body = chunk(inner) + b"0\r\n\r\n"
        headers = (*te, b"Content-Length: %d" % len(b"%x\r\n" % len(inner)))
        return _post(f"/attack/{tag}", headers, body)

    return make


def _te_only(te: tuple[bytes, ...]) -> Mutation:
    """An obfuscated TE alone: a reader that ignores it sees no body, then the chunks."""

    def make(tag: str) -> Message:
        return _post(f"/attack/{tag}", te, chunked([smuggled(tag)]))

    return make


def _cl_cl(first: bytes, second: bytes | None) -> Mutation:
    def make(tag: str) -> Message:
        payload = b"hello"
        body = payload + smuggled(tag)
        values = {b"short": b"%d" % len(payload), b"long": b"%d" % len(body)}
        if second is None:  # one field, list form
            headers: tuple[bytes, ...] = (
                b"Content-Length: " + values[first] + b", " + values[b"long"],
            )
        else:
            headers = (b"Content-Length: " + values[first], b"Content-Length: " + values[second])
        return _post(f"/attack/{tag}", headers, body)

    return make


def _head_line(line: bytes) -> Mutation:
    """A header line (raw, possibly with a bare LF or fold) that hides a Content-Length."""

    def make(tag: str) -> Message:
        body = smuggled(tag)
        return _post(f"/attack/{tag}", (line % len(body),), body)

    return make


def _connection_names(name: bytes) -> Mutation:
    """``Connection: <framing header>``: a proxy that drops it forwards the body as a request."""

    def make(tag: str) -> Message:
        body = smuggled(tag)
        if name == b"Transfer-Encoding":
            headers: tuple[bytes, ...] = (b"Connection: " + name, b"Transfer-Encoding: chunked")
            return _post(f"/attack/{tag}", headers, chunked([body]))
        headers = (b"Connection: " + name, b"Content-Length: %d" % len(body))
        return _post(f"/attack/{tag}", headers, body)

    return make


def _upgrade_with_body(tag: str) -> Message:
    body = smuggled(tag)
    headers = (
        b"Connection: Upgrade",
        b"Upgrade: websocket",
        b"Content-Length: %d" % len(body),
    )
    return _post(f"/attack/{tag}", headers, body)


def _connect_with_body(tag: str) -> Message:
    body = smuggled(tag)
    line = f"CONNECT {HOST}:443 HTTP/1.1".encode()
    return Message(
        line, (b"Host: " + HOST.encode() + b":443", b"Content-Length: %d" % len(body)), body
    )


def _trailers(fields: tuple[bytes, ...]) -> Mutation:
    def make(tag: str) -> Message:
        body = chunked([b"hello"], trailers=fields)
        line = f"POST /attack/{tag} HTTP/1.1".encode()
        headers = (
            b"Host: " + HOST.encode(),
            b"Trailer: " + b", ".join(f.split(b":")[0] for f in fields),
            b"Transfer-Encoding: chunked",
        )
        return Message(line, headers, body)

    return make


def _trailer_value(name: str) -> bytes:
    return f"{name}: {TRAILER_MARK}".encode()


TE = b"Transfer-Encoding: "
SMUGGLING: dict[str, Mutation] = {
    # CL.TE / TE.CL: both framings, a front end that picks the other one is desynced.
    "CL.TE": _te_cover((TE + b"chunked",)),
    "TE.CL": _te_short((TE + b"chunked",)),
    # TE.TE: an obfuscated Transfer-Encoding that one parser honours and another ignores.
    "TE.TE xchunked": _te_cover((TE + b"xchunked",)),
    "TE.TE space-chunked": _te_cover((TE + b" chunked",)),
    "TE.TE tab-chunked": _te_cover((TE + b"\tchunked",)),
    "TE.TE chunked, identity": _te_cover((TE + b"chunked, identity",)),
    "TE.TE identity, chunked": _te_short((TE + b"identity, chunked",)),
    "TE.TE duplicate TE": _te_cover((TE + b"chunked", TE + b"identity")),
    "TE.TE duplicate chunked": _te_short((TE + b"chunked", TE + b"chunked")),
    "TE.TE Chunked case": _te_short((TE + b"Chunked",)),
    "TE.TE xchunked alone": _te_only((TE + b"xchunked",)),
    "TE.TE vertical tab": _te_only((TE + b"\x0bchunked",)),
    "TE.TE form feed": _te_only((TE + b"\x0cchunked",)),
    "TE.TE space before colon": _te_only((b"Transfer-Encoding : chunked",)),
    "TE.TE obs-fold": _te_only((b"X-Folded: x", b" Transfer-Encoding: chunked")),
    "TE.TE bare LF": _te_only((b"X-Lf: x\nTransfer-Encoding: chunked",)),
    # CL.CL: two lengths.
    "CL.CL short,long": _cl_cl(b"short", b"long"),
    "CL.CL long,short": _cl_cl(b"long", b"short"),
    "CL.CL list form": _cl_cl(b"short", None),
    # Framing hidden by bare LF, obs-fold, whitespace before the colon, NUL, 0x0b, 0x0c.
    "bare LF before CL": _head_line(b"X-Lf: x\nContent-Length: %d"),
    "obs-fold CL": _head_line(b"X-Folded: x\r\n Content-Length: %d"),
    "space before colon CL": _head_line(b"Content-Length : %d"),
    "NUL in value": _head_line(b"X-Nul: a\x00b\r\nContent-Length: %d"),
    "NUL in CL": _head_line(b"Content-Length: \x00%d"),
    "VT in value": _head_line(b"X-Vt: a\x0bb\r\nContent-Length: %d"),
    "FF in value": _head_line(b"X-Ff: a\x0cb\r\nContent-Length: %d"),
    # A framing header named in Connection (issue 11, smuggling path 1).
    "Connection: Content-Length": _connection_names(b"Content-Length"),
    "Connection: Transfer-Encoding": _connection_names(b"Transfer-Encoding"),
    "Connection: Host": lambda tag: replace(
        _connection_names(b"Content-Length")(tag),
        headers=(b"Host: " + HOST.encode(), b"Connection: Host", b"Content-Length: 5"),
        body=b"hello",
    ),
    # Upgrade / CONNECT with a body (issue 11, smuggling path 2).
    "Upgrade with body": _upgrade_with_body,
    "CONNECT with body": _connect_with_body,
    # Trailers (issue 11, smuggling path 3): never merged into the header section.
    "trailer Authorization": _trailers((_trailer_value("Authorization"),)),
    "trailer Host": _trailers((_trailer_value("Host"),)),
    "trailer Content-Length": _trailers((b"Content-Length: 999",)),
    "trailer X-User-Id": _trailers((_trailer_value("X-User-Id"),)),
    "trailer Content-Type": _trailers((_trailer_value("Content-Type"),)),
}


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def attack_stream(name: str) -> bytes:
    """The attack, then an innocent request on the same connection (the would-be victim)."""
    tag = slug(name)
    return stream([SMUGGLING[name](tag), request("GET", f"/after/{tag}")])


# -- the reference reading --------------------------------------------------------------------


@dataclass(frozen=True)
class Read:
    """One request as h11 reads it."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    trailers: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> tuple[str, str, bytes]:
        return (self.method, self.target, self.body)


@dataclass
class Reading:
    """Everything h11 reads from a byte stream, and why it stopped."""

    requests: list[Read] = field(default_factory=list)
    stopped: str = "end of data"


def read_requests(data: bytes) -> Reading:
    """Read ``data`` (then EOF) as a server would with h11; stop at its first complaint."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    conn.receive_data(b"")
    reading = Reading()
    head: h11.Request | None = None
    body = b""
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as ex:
            reading.stopped = f"h11: {ex}"
            return reading
        if event is h11.NEED_DATA or event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
            return reading
        if isinstance(event, h11.Request):
            head, body = event, b""
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            reading.requests.append(_read(head, body, event.headers))
            if not _answer(conn, head):
                reading.stopped = "the connection ends after this request"
                return reading


def _pairs(headers: object) -> tuple[tuple[str, str], ...]:
    raw = headers.raw_items()  # type: ignore[attr-defined]
    return tuple((n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in raw)


def _read(head: h11.Request, body: bytes, trailers: object) -> Read:
    return Read(
        head.method.decode("latin-1"),
        head.target.decode("latin-1"),
        _pairs(head.headers),
        body,
        _pairs(trailers),
    )


def _answer(conn: h11.Connection, head: h11.Request) -> bool:
    """Answer (refusing any protocol switch); return whether the connection goes on."""
    status = 405 if head.method == b"CONNECT" else 200
    conn.send(h11.Response(status_code=status, headers=[("Content-Length", "0")]))
    conn.send(h11.EndOfMessage())
    if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
        return False
    conn.start_next_cycle()
    return True
