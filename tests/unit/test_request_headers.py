"""The client's headers as the pipeline reads them from the WSGI environ (gw.core.headers)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gw.core import headers as module
from gw.core.headers import Headers


def _environ(**extra: str) -> dict[str, object]:
    return {
        "REQUEST_METHOD": "POST",
        "HTTP_HOST": "gw.test",
        "CONTENT_LENGTH": "3",
        "HTTP_X_TRACE_NOTE": "a",
        "wsgi.url_scheme": "http",
        "CONTENT_TYPE": "text/plain",
        "HTTP_ACCEPT": "*/*",
        "REMOTE_ADDR": "127.0.0.1",
        **extra,
    }


def test_header_keys_become_fields_in_environ_order_then_content_type_and_length() -> None:
    headers = Headers.from_environ(_environ())

    assert headers.items() == [
        ("Host", "gw.test"),
        ("X-Trace-Note", "a"),
        ("Accept", "*/*"),
        ("Content-Type", "text/plain"),
        ("Content-Length", "3"),
    ]
    assert headers.get("x-trace-note") == "a"
    assert headers.get("Content-Type") == "text/plain"
    assert "REMOTE_ADDR" not in headers.by_name


def test_empty_content_type_and_length_are_no_fields_but_an_empty_header_is_one() -> None:
    headers = Headers.from_environ(_environ(CONTENT_TYPE="", CONTENT_LENGTH="", HTTP_X_EMPTY=""))

    assert [name for name, _ in headers.items()] == ["Host", "X-Trace-Note", "Accept", "X-Empty"]
    assert headers.get("X-Empty") == ""


def test_the_name_cache_stays_bounded_and_names_past_its_bound_are_read_alike() -> None:
    # APPSEC: clients choose header names; a worker must not keep every name it ever saw.
    many = module.NAME_CACHE_SIZE * 3
    for n in range(many):
        Headers.from_environ({f"HTTP_X_CLIENT_CHOSEN_{n}": "v"})

    assert module.environ_names.cache_info().currsize <= module.NAME_CACHE_SIZE
    late = Headers.from_environ({f"HTTP_X_CLIENT_CHOSEN_{many}": "late", "HTTP_HOST": "h"})
    assert late.items() == [(f"X-Client-Chosen-{many}", "late"), ("Host", "h")]
    assert late.get(f"x-client-chosen-{many}") == "late"


def test_the_comparison_form_cache_stays_bounded_and_names_past_it_compare_alike() -> None:
    many = module.NAME_CACHE_SIZE * 3
    for n in range(many):
        module.canonical_name(f"X_Client.Chosen-{n}")

    assert module.canonical_name.cache_info().currsize <= module.NAME_CACHE_SIZE
    assert module.canonical_name(f"X_Client.Chosen-{many}") == f"x-client-chosen-{many}"


_KEYS = st.sampled_from(
    ["HTTP_CONNECTION", "HTTP_X_A", "HTTP_X.A", "HTTP_KEEP_ALIVE", "HTTP_X_USER_ID", "HTTP_TE"]
)
_VALUES = st.sampled_from(["x-a", "X-A, keep-alive", "close", "x.a", "1", " X-User-Id "])


def _field_by_field(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """forwardable as it read every pair for a Connection field (the reference)."""
    framing = {"content-length", "transfer-encoding", "host"}
    dropped = module.HOP_BY_HOP | framing | module.GATEWAY_OWNED
    for name, value in pairs:
        if name.lower() == "connection":
            dropped |= {module.canonical_name(token.strip()) for token in value.split(",")}
    return [(n, v) for n, v in pairs if module.canonical_name(n) not in dropped]


@given(st.dictionaries(_KEYS, _VALUES, max_size=6))
def test_the_headers_forward_what_their_pairs_forward(fields: dict[str, str]) -> None:
    """APPSEC: forwardable reads a Headers' Connection field by its lower-case name; what it
    keeps is what the field-by-field reading of the same pairs keeps (hop-by-hop abuse)."""
    headers = Headers.from_environ(_environ(**fields))
    assert module.forwardable(headers) == _field_by_field(headers.items())
    if "HTTP_CONNECTION" in fields and "x-a" in fields["HTTP_CONNECTION"].lower():
        assert all(name not in ("X-A", "X.A") for name, _ in module.forwardable(headers))


_ANSWER_NAMES = st.sampled_from(
    ["connection", "keep-alive", "x-a", "x-b", "set-cookie", "transfer-encoding", "Connection"]
)
_ANSWER_VALUES = st.sampled_from(["x-a", "X-B, keep-alive", " x-a ,x-b", "close", "1", ""])


@given(st.lists(st.tuples(_ANSWER_NAMES, _ANSWER_VALUES), max_size=8))
def test_an_answer_passes_on_what_its_pairs_pass_on(pairs: list[tuple[str, str]]) -> None:
    """APPSEC: hop-by-hop fields and those an upstream's Connection field names never reach
    the client; every other field does, in its order."""
    kept = module.response_headers(iter(pairs))
    named = {t.strip().lower() for n, v in pairs if n == "connection" for t in v.split(",")}
    never = named | module.HOP_BY_HOP
    assert not {name for name, _ in kept} & never
    assert kept == [pair for pair in pairs if pair[0] not in never]  # the rest, in order
