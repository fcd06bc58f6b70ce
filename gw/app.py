"""Falcon glue: the WSGI application that gunicorn serves (``gunicorn gw.app:app``).

The only module that knows Falcon. Every request goes to one sink that hands the WSGI
environ to the pipeline and writes its outcome back; Falcon's own router is not used, because
routing must run on the gateway's canonical path (see ``gw.core.paths``).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import falcon
from falcon.app import _BODILESS_STATUS_CODES as _BODILESS  # Falcon's own rules, mirrored
from falcon.app import _TYPELESS_STATUS_CODES as _TYPELESS
from falcon.util.misc import code_to_http_status

from gw.config.assemble import Config
from gw.config.load import load_config
from gw.core.exchange import Outcome
from gw.errors import ConfigError
from gw.health.checker import ActiveChecker
from gw.observe import accesslog
from gw.pipeline import Gateway

log = logging.getLogger("gw")


class Response(falcon.Response):
    """Falcon's response, which hands the pipeline's header fields to the WSGI server as they
    are: each field as the pipeline made it, in its order and spelling, a repeated name
    repeated (as nginx relays an upstream's fields).

    PERF: Falcon keeps its fields in a table by lower-case name (``append_header`` joins a
    repeated name's values) and lists them again for the WSGI server; for the pipeline's 8-13
    fields that was a Python step and a lower-case copy each, about 2,000 instructions a
    field over the two loops. The edge reads them as written. ``tests/unit/test_app.py``
    checks that what Falcon itself sets (an error's fields) still goes out, after them.
    """

    pipeline_fields: list[tuple[str, str]] | None = None

    def _wsgi_headers(self, media_type: str | None = None) -> list[tuple[str, str]]:
        fields = self.pipeline_fields
        if fields is None:
            return super()._wsgi_headers(media_type)
        if self._headers or self._extra_headers or self._cookies is not None:
            return fields + super()._wsgi_headers(media_type)  # set by Falcon or an app hook
        return fields


class Request(falcon.Request):
    """Falcon's request, whose fields are made when something first reads them.

    PERF: Falcon's constructor sets some 30 fields (a context object, the query string parsed
    into a table, the content type, the stream); the pipeline reads only the environ, and
    Falcon's ``App.__call__`` only ``method``, ``path`` and ``is_websocket``. This sets those
    (as Falcon does for an ASCII path, with the trailing-slash option off) and leaves the rest
    to Falcon's own constructor, which the first read of any other field runs, keeping the
    route's ``uri_template``: an error handler, a hook or a later Falcon release that reads more
    gets Falcon's request whole. ``tests/unit/test_app.py`` compares the two field by field.
    """

    __slots__ = ("_whole",)

    def __init__(self, env: dict[str, Any], options: falcon.RequestOptions | None = None) -> None:
        path = env["PATH_INFO"]
        if (
            not path
            or not path.isascii()
            or options is None
            or options.strip_url_path_trailing_slash
        ):
            self._make_whole(env, options)  # Falcon's own reading of the path
            return
        self._whole = False
        self.env = env
        self.options = options
        self.method = env["REQUEST_METHOD"]
        self.path = path
        self.is_websocket = False
        self.uri_template = None

    def _make_whole(self, env: dict[str, Any], options: falcon.RequestOptions | None) -> None:
        self._whole = True
        super().__init__(env, options)

    def __getattr__(self, name: str) -> Any:
        # Only for a field not set yet: the first one read runs Falcon's constructor.
        if self._whole or name.startswith("__"):
            raise AttributeError(name)
        template = self.uri_template  # set by App.__call__ from the router's answer
        self._make_whole(self.env, self.options)
        self.uri_template = template
        return getattr(self, name)


class _ProxySink:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def __call__(self, req: Request, resp: Response, **_: Any) -> None:
        self.serve(req, resp)  # as Falcon calls a responder, with the route's fields

    def serve(self, req: Request, resp: Response) -> None:
        self.fill(resp, self.gateway.handle(req.env))

    @staticmethod
    def fill(resp: Response, outcome: Outcome) -> None:
        resp.status = outcome.status
        resp.pipeline_fields = outcome.headers
        resp.stream = outcome.body


class _EveryMethod(dict[str, Any]):
    """A route's responders by method, where every method has the one sink."""

    def __init__(self, sink: _ProxySink) -> None:
        super().__init__()
        self.sink = sink

    def __missing__(self, method: str) -> _ProxySink:
        return self.sink  # nothing kept: clients choose the method


class _OneRoute:
    """Falcon's router for gw: every path and method goes to the one sink, as a sink on
    ``/`` would (the pipeline routes on the canonical path, ``gw.core.paths``).

    PERF: Falcon's router and its list of sinks are searched on every request (a compiled
    router that never matches, then the sinks' regular expressions): about 4,000
    instructions; this answers with one tuple made at start. Falcon's custom-router
    interface (``find``) is public.
    """

    def __init__(self, sink: _ProxySink) -> None:
        self._route: tuple[Any, ...] = (sink, _EveryMethod(sink), {}, None)

    def find(self, uri: str, req: Request | None = None) -> tuple[Any, ...]:
        return self._route

    def add_route(self, uri_template: str, resource: object, **kwargs: Any) -> None:
        raise TypeError("gw's Falcon app has one route: the pipeline routes itself")


class App(falcon.App[Request, Response]):
    """Falcon's app, whose ``__call__`` leaves out the steps that do nothing in gw's.

    PERF: Falcon's ``__call__`` runs its middleware stacks (gw's app has none) and asks the
    router for a responder (gw's answers the one sink for every path and method: ``_OneRoute``),
    then calls it: about 100 bytecodes and four calls a request for nothing. This runs the rest
    of Falcon's steps in Falcon's order: the same request and response types, the same error
    handling (``_handle_exception``), the same body, status and field rules. Until the sink is
    set (``create_app``), and as soon as middleware is added, every request goes through
    Falcon's own ``__call__``. ``tests/unit/test_app.py`` compares the two.

    PERF: for the usual request (an ASCII path, a method that is not Falcon's meta method, the
    trailing-slash option off) and the usual outcome (a body that is not file-like, nothing
    raised), Falcon's request and response objects would only carry the pipeline's status,
    fields and body from the sink to ``start_response``: about 12,600 instructions a request
    (bench/README.md, the twenty-third run). That answer is written straight
    from the outcome by Falcon's rules (``_direct``); every other request and outcome gets the
    objects, and Falcon's error handling for what was raised.
    """

    _sink: _ProxySink | None = None

    def add_middleware(self, middleware: Any) -> None:
        self._sink = None  # middleware runs only in Falcon's own __call__
        super().add_middleware(middleware)

    def __call__(self, env: dict[str, Any], start_response: Any) -> Any:
        sink = self._sink
        if sink is None:
            return super().__call__(env, start_response)
        path = env["PATH_INFO"]
        if (
            not path
            or not path.isascii()
            or env["REQUEST_METHOD"] in self._META_METHODS
            or self.req_options.strip_url_path_trailing_slash
        ):
            return self._with_objects(env, start_response, sink)
        try:
            outcome = sink.gateway.handle(env)
        except Exception as ex:
            return self._with_objects(env, start_response, sink, ex)
        if hasattr(outcome.body, "read"):  # Falcon wraps a file-like body
            return self._with_objects(env, start_response, sink, outcome)
        return self._direct(env, start_response, outcome)

    def _direct(self, env: dict[str, Any], start_response: Any, outcome: Outcome) -> Any:
        """What Falcon's ``_answer`` makes of a response carrying ``outcome``: its status
        line, the pipeline's fields as they are, the body (none for HEAD, 1xx, 204, 304)."""
        status = code_to_http_status(outcome.status)
        body = outcome.body
        if status in _BODILESS or env["REQUEST_METHOD"] == "HEAD":
            body = []
        try:
            start_response(status, outcome.headers)
        except Exception as ex:
            if self._report_error is not None:
                self._report_error(self._request(env), ex, {}, False)
            raise
        return body

    def _request(self, env: dict[str, Any]) -> Request:
        return self._request_type(env, options=self.req_options)

    def _with_objects(
        self,
        env: dict[str, Any],
        start_response: Any,
        sink: _ProxySink,
        served: Outcome | Exception | None = None,
    ) -> Any:
        """Falcon's steps with its request and response objects; ``served``: the sink's
        outcome, or what it raised, when the pipeline has already served the request."""
        req = self._request(env)
        resp = self._response_type(options=self.resp_options)
        try:
            if served is None:
                if req.method in self._META_METHODS:
                    raise falcon.HTTPBadRequest()
                served = sink.gateway.handle(env)
            if isinstance(served, Exception):
                raise served
            _ProxySink.fill(resp, served)
        except Exception as ex:
            if not self._handle_exception(req, resp, ex, {}):
                raise
        return self._answer(env, start_response, req, resp)

    def _answer(
        self, env: dict[str, Any], start_response: Any, req: Request, resp: Response
    ) -> Any:
        """The end of Falcon's ``__call__``: the body, the status, the fields, start_response.
        (Each exception gets its own empty route fields, as in Falcon: a handler may keep them.)"""
        try:
            body, length = self._get_body(resp, env.get("wsgi.file_wrapper"))
        except Exception as ex:
            if not self._handle_exception(req, resp, ex, {}):
                raise
            body, length = [], 0
        try:
            status = code_to_http_status(resp.status)
            media_type: str | None = self.resp_options.default_media_type
            if req.method == "HEAD" or status in _BODILESS:
                body = []
                if status in _TYPELESS:
                    media_type = None
                elif (
                    length is not None
                    and req.method == "HEAD"
                    and status not in _BODILESS
                    and "content-length" not in resp._headers
                ):
                    resp._headers["content-length"] = str(length)
            elif length is not None:
                resp._headers["content-length"] = str(length)
            start_response(status, resp._wsgi_headers(media_type))
            return body
        except Exception as ex:
            if self._report_error is not None:
                self._report_error(req, ex, {}, False)
            raise


def create_app(gateway: Gateway) -> App:
    """Return the Falcon app serving ``gateway``."""
    sink = _ProxySink(gateway)
    # Falcon documents custom routers (``find``, ``add_route``); its hints name only its own.
    app: App = App(  # type: ignore[call-overload]
        request_type=Request, response_type=Response, router=_OneRoute(sink)
    )
    # Never invent a Content-Type for an upstream response that had none.
    app.resp_options.default_media_type = None  # type: ignore[assignment]
    app._sink = sink
    return app


def load_app(path: str | None = None) -> falcon.App[Request, Response]:
    """Build the app from the config file named by ``path`` or ``$GW_CONFIG``."""
    # GW_ACTIVE_CONFIG: the copy the master checked (gw/host/runtime.py); GW_CONFIG without it.
    path = path or os.environ.get("GW_ACTIVE_CONFIG") or os.environ.get("GW_CONFIG")
    if not path:
        raise ConfigError(["GW_CONFIG is not set: name the gateway's config file"])
    config = load_config(path)
    accesslog.configure(config.server.access_log)
    accesslog.configure_diagnostics()
    _start_health_checks(config)
    return create_app(Gateway(config, metrics_port(os.environ.get("GW_METRICS_BIND"))))


def metrics_port(bind: str | None) -> str | None:
    """The port of ``GW_METRICS_BIND`` (``127.0.0.1:9180``), which gunicorn.conf.py listens on."""
    if not bind:
        return None
    host, sep, port = bind.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError([f"GW_METRICS_BIND={bind!r}: expected host:port (a TCP address)"])
    return port


def _start_health_checks(config: Config) -> None:
    """In each worker: one checker, which runs the active checks only while it leads the host.

    It also frees the shared health rows of dead workers, so it runs even without checks.
    """
    specs = [
        check
        for spec in config.upstreams.values()
        if spec.health is not None and spec.health.active is not None
        for check in spec.health.active.specs(spec.name, [str(t) for t in spec.targets], spec.tls)
    ]
    ActiveChecker(specs).start()


def __getattr__(name: str) -> Any:
    # PERF/ops: `app` is built on first access, in the worker, so that importing gw.app
    # (tests, the CLI) never needs a config file.
    if name == "app":
        try:
            application = load_app()
        except ConfigError as ex:
            for problem in ex.problems:
                print(
                    f"gw: config error: {os.environ.get('GW_CONFIG')}: {problem}", file=sys.stderr
                )
            raise
        globals()["app"] = application
        return application
    raise AttributeError(name)
