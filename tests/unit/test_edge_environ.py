"""The WSGI environ the edge builds from one parsed request (gw.edge.environ)."""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gw.core.bounded import KEPT
from gw.core.headers import Headers
from gw.core.ingress import HEADERS
from gw.edge import environ as module
from gw.edge.environ import build_environ
from gw.edge.request import Message, RequestRefused


def _message(*headers: tuple[bytes, bytes]) -> Message:
    message = Message()
    message.url = b"/a%2Fb?q=1"
    message.headers = list(headers)
    return message


def test_header_fields_become_environ_keys_as_gunicorn_names_them() -> None:
    environ = build_environ(
        {"REMOTE_ADDR": "127.0.0.1"},
        _message(
            (b"Host", b"gw.test"),
            (b"X-Token", b"a "),
            (b"x-token", b"b"),
            (b"X_User_Id", b"forged"),
            (b"Content-Type", b"text/plain"),
            (b"Content-Length", b"3"),
        ),
    )

    headers = {k: v for k, v in environ.items() if k.startswith(("HTTP_", "CONTENT_"))}
    assert headers == {
        "HTTP_HOST": "gw.test",
        "HTTP_X_TOKEN": "a,b",  # repeated fields joined; trailing whitespace dropped
        "CONTENT_TYPE": "text/plain",
        "CONTENT_LENGTH": "3",
    }
    assert environ["PATH_INFO"] == "/a/b" and environ["RAW_URI"] == "/a%2Fb?q=1"


@given(st.binary(max_size=24).map(lambda tail: b"/" + tail))
def test_the_path_is_unquoted_as_urllib_unquotes_it(target: bytes) -> None:
    message = _message()
    message.url = target.replace(b"?", b"")
    path = message.url.decode("latin-1")
    assert build_environ({}, message)["PATH_INFO"] == unquote_to_bytes(path).decode("latin-1")


_KNOWN = (b"Host", b"host", b"X-Token", b"x-token", b"X_User_Id", b"Connection", b"x.dotted")
_FRAMING = (b"Content-Type", b"content-length", b"Content-Length", b"Accept", b"TE")
_ANY = st.from_regex(rb"[A-Za-z0-9_.-]{1,12}", fullmatch=True)
_NAMES = st.sampled_from(_KNOWN + _FRAMING) | _ANY
_VALUES = st.sampled_from([b"", b"a", b" v \t", b"5", b"close, x-token"])


@given(st.lists(st.tuples(_NAMES, _VALUES), max_size=12))
def test_the_pipeline_reads_the_same_fields_from_the_edges_headers(
    fields: list[tuple[bytes, bytes]],
) -> None:
    # APPSEC: the pipeline reads the client's fields through the Headers the edge made with
    # the environ (gw.core.ingress); a field they missed would be neither checked nor
    # forwarded, and one they read otherwise would be checked as one value and sent as another.
    try:
        environ = build_environ({"REMOTE_ADDR": "127.0.0.1", "wsgi.x": 1}, _message(*fields))
    except RequestRefused:
        return  # a second Host or Content-Type field
    scanned = Headers.from_environ(environ)
    names = [name.lower() for name, _ in fields]
    repeated = any(names.count(n) > 1 and b"_" not in n for n in names)
    if repeated:
        assert HEADERS not in environ  # the pipeline reads the joined values from the environ
        return
    made = environ[HEADERS]
    assert made.items() == scanned.items()
    assert made.by_name == scanned.by_name


def test_the_edges_headers_are_those_of_the_environ() -> None:
    environ = build_environ(
        {},
        _message(
            (b"Host", b"gw.test"),
            (b"Content-Length", b"3"),
            (b"x.dotted", b"d "),
            (b"X_User_Id", b"forged"),
            (b"Content-Type", b"text/plain"),
        ),
    )
    assert environ[HEADERS].items() == [
        ("Host", "gw.test"),
        ("X.Dotted", "d"),
        ("Content-Type", "text/plain"),
        ("Content-Length", "3"),
    ]
    repeated = build_environ({}, _message((b"Host", b"gw.test"), (b"X-A", b"1"), (b"x-a", b"2")))
    assert HEADERS not in repeated and repeated["HTTP_X_A"] == "1,2"


def test_a_second_host_field_is_refused() -> None:
    with pytest.raises(RequestRefused):
        build_environ({}, _message((b"Host", b"a"), (b"host", b"b")))


def test_the_key_cache_stays_bounded_and_names_past_its_bound_are_read_alike(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # APPSEC: clients choose header names; a worker must not keep every name it ever saw.
    monkeypatch.setattr(module, "_NAMES", {})  # this test's own, left full afterwards
    many = KEPT * 3
    for n in range(many):
        build_environ({}, _message((b"X-Chosen-%d" % n, b"v")))

    assert len(module._NAMES) <= KEPT
    late = build_environ({}, _message((b"X-Chosen-%d" % many, b"late"), (b"X_Late", b"no")))
    assert late[f"HTTP_X_CHOSEN_{many}"] == "late"
    assert not any("LATE" in key for key in late)
