"""The WSGI environ of one request: the connection's addresses, the target, the header fields.

Header names with an underscore are dropped, as gunicorn does, so ``X_User_Id`` can never pose
as ``X-User-Id`` once both are folded into the WSGI ``HTTP_X_USER_ID`` key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_to_bytes

from gw.core.bounded import remember
from gw.core.headers import CGI_HEADERS, Headers, environ_names
from gw.core.ingress import HEADERS
from gw.edge.request import Message, RequestRefused

_SINGLETONS = frozenset({"HTTP_HOST", "CONTENT_TYPE"})


def build_environ(base: dict[str, Any], message: Message) -> dict[str, Any]:
    """Return the environ of ``message``: ``base`` (server and connection keys) and its own."""
    made = _compiled_environ(
        base, message.headers, _NAMES, message.url, message.method, message.version
    )
    return _environ_made_here(base, message) if made is None else made


def _environ_made_here(base: dict[str, Any], message: Message) -> dict[str, Any]:
    """``build_environ`` in Python: the judge of its compiled form, and every environ that
    one declines."""
    environ = base.copy()
    found = _fields(environ, message.headers)
    raw_uri = message.url.decode("latin-1")
    path, _, query = raw_uri.partition("?")
    if not path.startswith("/"):
        path = _absolute_path(path)  # the pipeline reads the authority from RAW_URI
    environ["REQUEST_METHOD"] = message.method
    environ["RAW_URI"] = raw_uri
    # PERF: a path with no escape and only ASCII is its own decoding: no Python call for it
    # (unquote_to_bytes encodes what it is given as UTF-8: a non-ASCII path goes through it)
    if "%" in path or not path.isascii():
        path = _decoded_path(path)
    environ["PATH_INFO"] = path
    environ["QUERY_STRING"] = query
    environ["SERVER_PROTOCOL"] = f"HTTP/{message.version}"
    if "CONTENT_TYPE" not in environ:
        # PERF: PEP 3333 lets it be empty; Falcon reads it in a try/except KeyError, so an
        # absent one costs Falcon an exception on every request without a body.
        environ["CONTENT_TYPE"] = ""
    if found is not None:  # None: a field was repeated; the pipeline reads the environ's join
        environ[HEADERS] = Headers.from_fields(found[0], found[1], environ)
    return environ


Found = tuple[list[tuple[str, str]], dict[str, str]]


def _fields(environ: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> Found | None:
    """Add the header fields to ``environ``; return the pipeline's fields as
    ``Headers.from_fields`` takes them (PERF: made here, in the one pass over the fields, as
    ``Headers.from_environ`` would read them from the environ: gw.core.ingress), or None when
    a field was repeated and joined."""
    pairs: list[tuple[str, str]] = []
    by_name: dict[str, str] = {}
    joined = False
    for raw_name, raw_value in headers:
        key, name, lower = _environ_names(raw_name)
        if not key:
            continue  # APPSEC: see the module docstring (header names with underscores)
        value = raw_value.decode("latin-1").rstrip(" \t")  # llhttp keeps trailing OWS
        if key in environ:
            if key in _SINGLETONS:
                # APPSEC: two Host or Content-Type fields cannot be merged (RFC 9110
                # section 5.3); joined, they would be read differently downstream.
                raise RequestRefused(400, f"more than one {raw_name.decode('latin-1')} field")
            environ[key] += "," + value
            joined = True
        else:
            environ[key] = value
            if key[0] == "H":  # not CONTENT_TYPE or CONTENT_LENGTH
                pairs.append((name, value))
                by_name[lower] = value
    return None if joined else (pairs, by_name)


def _not_compiled(*args: Any) -> None:
    """Stands for the compiled form where it is not built: the Python form does it all."""
    return None


_DROPPED = ("", "", "")


def _environ_names(raw_name: bytes) -> tuple[str, str, str]:
    """The WSGI environ key of header ``raw_name`` and the names the pipeline reads it by
    (``b"X-Token"``: ``("HTTP_X_TOKEN", "X-Token", "x-token")``; Content-Type and
    Content-Length: their key alone), or ``("", "", "")`` for a name with an underscore,
    which the environ never holds."""
    known = _NAMES.get(raw_name)
    if known is not None:
        return known
    if b"_" in raw_name:
        return remember(_NAMES, raw_name, _DROPPED)
    key = raw_name.decode("latin-1").upper().replace("-", "_")
    if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        return remember(_NAMES, raw_name, (key, "", ""))
    key = "HTTP_" + key
    names = environ_names(key)
    assert names, key  # an HTTP_* key always has them
    return remember(_NAMES, raw_name, (key, names[0], names[1]))


# PERF: each name converted once per process, not per request, and read with one dict lookup
# (by the compiled environ too, which leaves a name not in it to ``_environ_names``).
# APPSEC: bounded (``gw.core.bounded``), as clients choose the names.
_NAMES: dict[bytes, tuple[str, str, str]] = {}


def address_environ(client: Any, server: Any) -> dict[str, str]:
    """REMOTE_* and SERVER_* keys; a unix socket peer has no address (REMOTE_ADDR is '')."""
    environ = {"REMOTE_ADDR": "", "SERVER_NAME": "localhost", "SERVER_PORT": ""}
    if isinstance(client, tuple) and client:
        environ["REMOTE_ADDR"] = str(client[0])
        environ["REMOTE_PORT"] = str(client[1])
    if isinstance(server, tuple) and server:
        environ["SERVER_NAME"] = str(server[0])
        environ["SERVER_PORT"] = str(server[1])
    return environ


def _decoded_path(path: str) -> str:
    """PATH_INFO of a path with an escape or a character beyond ASCII (PEP 3333: Latin-1)."""
    return unquote_to_bytes(path).decode("latin-1")


def _absolute_path(target: str) -> str:
    """The path of an absolute-form target (``http://host/p`` -> ``/p``), else the target."""
    scheme, sep, rest = target.partition("://")
    if not sep or not scheme.isalpha():
        return target
    slash = rest.find("/")
    return rest[slash:] if slash >= 0 else "/"


# PERF: ``build_environ`` made in C (gw/edge/_requestfields.c) for requests whose fields are all
# different: the same keys and values, with the path functions above; anything else is left to
# ``_environ_made_here``.
_compiled_environ: Callable[
    [
        dict[str, Any],
        list[tuple[bytes, bytes]],
        dict[bytes, tuple[str, str, str]],
        bytes,
        str,
        str,
    ],
    dict[str, Any] | None,
]
try:
    from gw.edge import _requestfields
except ImportError:  # built without a C compiler (setup.py: optional)
    _compiled_environ = _not_compiled
else:
    _requestfields.configure(Headers, HEADERS, CGI_HEADERS, _absolute_path, _decoded_path)
    _compiled_environ = _requestfields.environ
