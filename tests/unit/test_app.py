"""The Falcon glue: a response takes the pipeline's fields as ``append_header`` would."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import falcon
import falcon.testing
from hypothesis import given
from hypothesis import strategies as st

from gw.app import Response

Fields = list[tuple[str, str]]

_NAMES = st.sampled_from(
    ["Vary", "vary", "VARY", "Set-Cookie", "set-cookie", "Content-Type", "X-A", "x-a", "Date"]
)
_VALUES = st.text(alphabet="abcXYZ019 =;,-", max_size=8)


def _head(fill: Callable[[Response, Fields], None], fields: Fields) -> list[tuple[str, str]]:
    """The status and header list a Falcon app hands the WSGI server for ``fields``."""

    def sink(req: falcon.Request, resp: Response, **_: Any) -> None:
        fill(resp, fields)
        resp.text = "ok"

    app = falcon.App(response_type=Response)
    app.resp_options.default_media_type = None  # type: ignore[assignment]
    app.add_sink(sink, prefix="/")
    seen: list[list[tuple[str, str]]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen.append(headers)

    b"".join(app(falcon.testing.create_environ("/x"), start_response))
    return seen[0]


def _appended(resp: Response, fields: Fields) -> None:
    for name, value in fields:
        resp.append_header(name, value)


@given(st.lists(st.tuples(_NAMES, _VALUES), max_size=12))
def test_add_fields_makes_the_head_append_header_makes(fields: Fields) -> None:
    assert _head(Response.add_fields, fields) == _head(_appended, fields)


def test_repeated_names_are_joined_and_each_cookie_kept() -> None:
    head = _head(
        Response.add_fields,
        [("Vary", "a"), ("Set-Cookie", "s=1"), ("vary", "b"), ("set-cookie", "t=2")],
    )
    assert ("vary", "a, b") in head
    assert [field for field in head if field[0] == "set-cookie"] == [
        ("set-cookie", "s=1"),
        ("set-cookie", "t=2"),
    ]
