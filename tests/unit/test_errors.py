"""Every error answer carries one JSON shape, and the codes clients match on do not change."""

from __future__ import annotations

import json

import pytest

from gw.errors import EdgeError, MethodNotAllowed, UpstreamTimeout


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "bad_request"),
        (403, "forbidden"),
        (414, "uri_too_long"),
        (417, "expectation_failed"),
        (431, "headers_too_large"),
        (500, "internal_error"),
        (501, "not_implemented"),
        (503, "overloaded"),
        (505, "http_version_not_supported"),
        (418, "bad_request"),  # a status the edge has no code for: the class's code
        (599, "internal_error"),
    ],
)
def test_edge_refusal_code_follows_its_status(status: int, code: str) -> None:
    """A request the edge refuses answers with the stable code of its status."""
    body = json.loads(EdgeError(status, "refused").render("rid-1"))
    assert body == {"error": code, "message": "refused", "request_id": "rid-1"}


def test_edge_and_app_errors_render_the_same_shape() -> None:
    """An app error and an edge refusal leave as the same fields, in the same order."""
    app = json.loads(UpstreamTimeout("the upstream did not answer in time").render("r"))
    edge = json.loads(EdgeError(431, "request head too large").render("r"))
    assert list(app) == list(edge) == ["error", "message", "request_id"]
    assert app["error"] == "upstream_timeout"


def test_render_is_the_error_dict_encoded() -> None:
    """render() is to_dict() as JSON bytes: extra fields kept, no request id when none is given."""
    error = MethodNotAllowed("DELETE", ["GET", "HEAD"])
    assert json.loads(error.render()) == error.to_dict()
    assert "request_id" not in json.loads(error.render())
