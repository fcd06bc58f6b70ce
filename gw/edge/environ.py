"""The WSGI environ of one request: the connection's addresses, the target, the header fields.

Header names with an underscore are dropped, as gunicorn does, so ``X_User_Id`` can never pose
as ``X-User-Id`` once both are folded into the WSGI ``HTTP_X_USER_ID`` key.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

from gw.edge.request import Message, RequestRefused

_SINGLETONS = frozenset({"HTTP_HOST", "CONTENT_TYPE"})
# PERF: the environ key of each header name as received (``b"X-Token"``: ``HTTP_X_TOKEN``; ``""``
# for a name with an underscore, which is dropped), kept per process: one dict lookup a header
# instead of a decode, ``upper``, ``replace`` and a concatenation.
# APPSEC: clients choose the names, so the memo is bounded; past its bound keys are derived per
# request, exactly as they would be memoized (a pure function of the name).
_KEY_MEMO: dict[bytes, str] = {}
_KEY_MEMO_LIMIT = 1024


def build_environ(base: dict[str, Any], message: Message) -> dict[str, Any]:
    """Return the environ of ``message``: ``base`` (server and connection keys) and its own."""
    raw_uri = message.url.decode("latin-1")
    path, _, query = raw_uri.partition("?")
    if not path.startswith("/"):
        path = _absolute_path(path)  # the pipeline reads the authority from RAW_URI
    environ = base.copy()
    environ["REQUEST_METHOD"] = message.method
    environ["RAW_URI"] = raw_uri
    environ["PATH_INFO"] = unquote_to_bytes(path).decode("latin-1")
    environ["QUERY_STRING"] = query
    environ["SERVER_PROTOCOL"] = f"HTTP/{message.version}"
    keys = _KEY_MEMO
    for raw_name, raw_value in message.headers:
        key = keys.get(raw_name)
        if key is None:
            key = _environ_key(raw_name)
        if not key:
            continue  # APPSEC: see the module docstring (header names with underscores)
        value = raw_value.decode("latin-1").rstrip(" \t")  # llhttp keeps trailing OWS
        if key in environ:
            if key in _SINGLETONS:
                # APPSEC: two Host or Content-Type fields cannot be merged (RFC 9110
                # section 5.3); joined, they would be read differently downstream.
                raise RequestRefused(400, f"more than one {raw_name.decode('latin-1')} field")
            environ[key] += "," + value
        else:
            environ[key] = value
    return environ


def _environ_key(raw_name: bytes) -> str:
    """The WSGI environ key of header ``raw_name``, or "" for one the environ never holds."""
    key = ""
    if b"_" not in raw_name:
        key = raw_name.decode("latin-1").upper().replace("-", "_")
        if key != "CONTENT_TYPE" and key != "CONTENT_LENGTH":
            key = "HTTP_" + key
    if len(_KEY_MEMO) < _KEY_MEMO_LIMIT:
        _KEY_MEMO[raw_name] = key
    return key


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


def _absolute_path(target: str) -> str:
    """The path of an absolute-form target (``http://host/p`` -> ``/p``), else the target."""
    scheme, sep, rest = target.partition("://")
    if not sep or not scheme.isalpha():
        return target
    slash = rest.find("/")
    return rest[slash:] if slash >= 0 else "/"
