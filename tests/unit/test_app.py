"""The Falcon glue: the WSGI server gets the pipeline's fields as the pipeline made them, and
what Falcon itself sets still goes out."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import falcon
import falcon.testing
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gw.app import Request, Response, create_app
from gw.core.exchange import Outcome

Fields = list[tuple[str, str]]

_NAMES = st.sampled_from(
    ["Vary", "vary", "VARY", "Set-Cookie", "set-cookie", "Content-Type", "X-A", "x-a", "Date"]
)
_VALUES = st.text(alphabet="abcXYZ019 =;,-", max_size=8)


def _head(fill: Callable[[Response], None], method: str = "GET") -> tuple[str, Fields]:
    """The status and header list a Falcon app around the sink ``fill`` hands the WSGI server."""

    def sink(req: falcon.Request, resp: Response, **_: Any) -> None:
        fill(resp)
        resp.stream = [b"ok"]

    app = falcon.App(response_type=Response)
    app.resp_options.default_media_type = None  # type: ignore[assignment]
    app.add_sink(sink, prefix="/")
    seen: list[tuple[str, Fields]] = []

    def start_response(status: str, headers: Fields, exc_info: Any = None) -> None:
        seen.append((status, headers))

    b"".join(app(falcon.testing.create_environ("/x", method=method), start_response))
    return seen[0]


def _given(fields: Fields) -> Callable[[Response], None]:
    def fill(resp: Response) -> None:
        resp.status = 201
        resp.pipeline_fields = fields

    return fill


@given(st.lists(st.tuples(_NAMES, _VALUES), max_size=12), st.sampled_from(["GET", "HEAD"]))
def test_the_server_gets_the_pipeline_fields_as_they_are(fields: Fields, method: str) -> None:
    """In their order and spelling, a repeated name repeated, each cookie apart."""
    assert _head(_given(list(fields)), method) == ("201 Created", fields)


def test_a_field_falcon_or_a_hook_sets_goes_out_after_the_pipeline_fields() -> None:
    def fill(resp: Response) -> None:
        _given([("Vary", "a"), ("vary", "b")])(resp)
        resp.set_header("X-Hook", "1")
        resp.append_header("Set-Cookie", "s=1")

    _, head = _head(fill)
    assert head == [("Vary", "a"), ("vary", "b"), ("x-hook", "1"), ("set-cookie", "s=1")]


def test_an_answer_falcon_makes_itself_keeps_its_own_fields() -> None:
    def fill(resp: Response) -> None:
        raise falcon.HTTPMethodNotAllowed(["GET"])

    status, head = _head(fill)
    assert status == "405 Method Not Allowed"
    assert ("allow", "GET") in head


class _Recorder:
    """A gateway that answers every request and keeps the method and path it was given."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def handle(self, environ: dict[str, Any]) -> Outcome:
        self.seen.append((environ["REQUEST_METHOD"], environ["PATH_INFO"]))
        return Outcome(202, [("X-Seen", "1")], [b"ok"])


@given(
    st.sampled_from(["GET", "POST", "DELETE", "OPTIONS", "PATCH", "BREW", "M-SEARCH"]),
    st.sampled_from(["/", "/x", "//a//b/", "/a/../b", "/%2e%2e/x", "/x;y", "/x/"]),
)
def test_every_method_and_path_reaches_the_pipeline(method: str, path: str) -> None:
    gateway = _Recorder()
    app = create_app(gateway)  # type: ignore[arg-type]
    answered: list[tuple[str, Fields]] = []
    environ = falcon.testing.create_environ(path, method=method)
    body = b"".join(app(environ, lambda status, fields, *_: answered.append((status, fields))))
    assert gateway.seen == [(method, environ["PATH_INFO"])]
    assert answered == [("202 Accepted", [("X-Seen", "1")])] and body == b"ok"


def test_the_app_takes_no_routes_of_its_own() -> None:
    app = create_app(_Recorder())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        app.add_route("/x", object())


def _fields(req: falcon.Request) -> dict[str, Any]:
    """Every field Falcon's request holds, read as a user of it would (the context and the
    streams compared by type: each request has its own)."""
    names = {name for cls in type(req).__mro__ for name in getattr(cls, "__slots__", ())}
    seen = {name: getattr(req, name, "<unset>") for name in sorted(names - {"_whole"})}
    for each_its_own in ("context", "stream", "_wsgierrors"):
        seen[each_its_own] = type(seen[each_its_own])
    seen["env"] = {k: v for k, v in seen["env"].items() if k not in ("wsgi.input", "wsgi.errors")}
    seen["options"] = id(seen["options"])
    return seen


@given(
    st.sampled_from(["GET", "POST", "HEAD", "BREW"]),
    st.sampled_from(["/", "/X", "/x/", "/caf\u00c3\u00a9", ""]),
    st.sampled_from(["", "a=1&b=2&a=3", "x"]),
    st.sampled_from([None, "application/x-www-form-urlencoded", "text/plain"]),
    st.booleans(),
)
def test_the_request_is_falcons_field_for_field(
    method: str, path: str, query: str, content_type: str | None, strip_slash: bool
) -> None:
    """Whatever the first read, gw's request then holds what Falcon's constructor makes of the
    same environ, with the route's template kept."""
    options = falcon.RequestOptions()
    options.strip_url_path_trailing_slash = strip_slash
    headers = {"Content-Type": content_type} if content_type else None
    body = b"c=4" if content_type else b""

    def environ() -> dict[str, Any]:
        env = falcon.testing.create_environ(
            "/", query_string=query, method=method, headers=headers, body=body
        )
        env["PATH_INFO"] = path
        return env

    falcons = falcon.Request(environ(), options)
    falcons.uri_template = "/{x}"
    ours = Request(environ(), options)
    # What App.__call__ reads before routing, then what it sets from the router's answer.
    assert (ours.method, ours.path, ours.is_websocket) == (
        falcons.method,
        falcons.path,
        falcons.is_websocket,
    )
    ours.uri_template = "/{x}"
    assert ours.params == falcons.params and ours.query_string == query
    assert _fields(ours) == _fields(falcons)


def test_a_route_template_survives_the_first_late_read() -> None:
    req = Request(falcon.testing.create_environ("/a", query_string="k=v"), falcon.RequestOptions())
    req.uri_template = "/a"
    assert req.get_param("k") == "v" and req.uri_template == "/a"
    with pytest.raises(AttributeError):
        req.no_such_field  # noqa: B018


class _Answering:
    """A gateway whose every request gets ``outcome``, or raises ``outcome`` (an exception)."""

    def __init__(self, outcome: Callable[[], Outcome]) -> None:
        self.outcome = outcome

    def handle(self, environ: dict[str, Any]) -> Outcome:
        return self.outcome()


def _through(app: Any, call: Callable[..., Any], method: str, path: str = "/x") -> tuple[Any, ...]:
    """What the WSGI server sees: each start_response, the body's bytes, or what was raised."""
    started: list[tuple[str, Fields]] = []
    environ = falcon.testing.create_environ("/", method=method)
    environ["PATH_INFO"] = path
    try:
        body = b"".join(
            call(app, environ, lambda status, fields, *_: started.append((status, fields)))
        )
    except Exception as ex:
        return (started, type(ex), str(ex))
    return (started, body)


class _ReadOnly:
    """A file-like body that can only be read: Falcon reads it in blocks."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._data.read(size)


def _raises(ex: Exception) -> Callable[[], Outcome]:
    def outcome() -> Outcome:
        raise ex

    return outcome


_OUTCOMES: list[Callable[[], Outcome]] = [
    lambda: Outcome(200, [("X-A", "1"), ("x-a", "2")], [b"ok"]),
    lambda: Outcome(201, [], [b"a", b"b"]),
    lambda: Outcome(204, [("X-A", "1")], []),
    lambda: Outcome(304, [("ETag", '"e"')], []),
    lambda: Outcome("599 Odd", [("X-A", "1")], [b"odd"]),
    lambda: Outcome(200, [], io.BytesIO(b"file-like")),
    lambda: Outcome(200, [], _ReadOnly(b"read, not iterated")),  # type: ignore[arg-type]
    _raises(falcon.HTTPForbidden(description="no")),
    _raises(falcon.HTTPStatus(falcon.HTTP_202, headers={"X-S": "1"})),
    _raises(falcon.HTTPStatus(falcon.HTTP_101, text="switch")),  # bodiless, with a length
    _raises(falcon.HTTPStatus(falcon.HTTP_204, text="none")),
    _raises(RuntimeError("a bug")),
]


@pytest.mark.parametrize("outcome", _OUTCOMES)
@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "WEBSOCKET"])
@pytest.mark.parametrize("path", ["/x", "", "/caf\u00c3\u00a9"])
@pytest.mark.parametrize("strip_slash", [False, True])
def test_the_app_answers_as_falcons_own_call_does(
    outcome: Callable[[], Outcome], method: str, path: str, strip_slash: bool
) -> None:
    """gw's App leaves out Falcon's middleware and router steps, and for the usual request and
    outcome its request and response objects (PERF): every answer, error and exception is still
    what Falcon's own ``__call__`` makes of the same app."""
    app = create_app(_Answering(outcome))  # type: ignore[arg-type]
    app.req_options.strip_url_path_trailing_slash = strip_slash
    assert app._sink is not None  # the short way is taken
    ours = _through(app, type(app).__call__, method, path)
    falcons = _through(app, falcon.App.__call__, method, path)
    assert ours == falcons


def test_a_failing_start_response_is_reported_as_falcon_reports_it() -> None:
    """Falcon hands an exception from ``start_response`` to the app's error reporter, with the
    request, then lets it go on."""
    app = create_app(_Answering(lambda: Outcome(200, [("X-A", "1")], [b"ok"])))  # type: ignore[arg-type]
    reported: list[tuple[str, str]] = []
    app._report_error = lambda req, ex, params, ok: reported.append((req.path, str(ex)))

    def start_response(status: str, fields: Fields, *_: Any) -> None:
        raise OSError("gone")

    for call in (type(app).__call__, falcon.App.__call__):
        with pytest.raises(OSError, match="gone"):
            call(app, falcon.testing.create_environ("/r"), start_response)
    assert reported == [("/r", "gone"), ("/r", "gone")]


def test_middleware_added_later_runs_in_falcons_own_call() -> None:
    class Stamp:
        def process_response(self, req: Any, resp: Any, resource: Any, ok: bool) -> None:
            resp.set_header("X-Stamp", "1")

    app = create_app(_Answering(lambda: Outcome(200, [("X-A", "1")], [b"ok"])))  # type: ignore[arg-type]
    app.add_middleware(Stamp())
    started, body = _through(app, type(app).__call__, "GET")
    assert started == [("200 OK", [("X-A", "1"), ("x-stamp", "1")])] and body == b"ok"
