"""Which gunicorn corpus cases run against gw, with which limits, and what counts as a refusal.

Shared by the corpus gates with and without nginx. The list of deliberate deviations from
gunicorn's verdicts stays in ``test_gunicorn_corpus`` (one list, one reason per case).
"""

from __future__ import annotations

import functools

from tests.support.corpus import Case, CorpusUnavailable, ExpectedRequest, corpus_root, load_cases

Limits = tuple[tuple[str, int], ...]  # gunicorn limit settings, as GW_LIMIT_* overrides

# gunicorn options gw sets through GW_LIMIT_* (gunicorn.conf.py): cases run with their values.
LIMIT_SETTINGS = frozenset(
    {"limit_request_line", "limit_request_fields", "limit_request_field_size"}
)

GUNICORN_LIMITS = {
    "limit_request_line": 4094,
    "limit_request_fields": 100,
    "limit_request_field_size": 8190,
}
GW_LIMITS = {
    "limit_request_line": 8190,
    "limit_request_fields": 100,
    "limit_request_field_size": 8190,
}

# gunicorn options gw does not use: a case that needs one tests gunicorn, not gw.
UNUSED_SETTINGS = {
    "strip_header_spaces": "gw never strips whitespace before the colon (a smuggling vector)",
    "permit_unconventional_http_method": "gw keeps gunicorn's default method syntax",
    "casefold_http_method": "gw keeps gunicorn's default: methods are case-sensitive",
    "header_map": "gw keeps gunicorn's default header_map=drop (names with '_' are dropped)",
    "permit_obsolete_folding": "gw refuses obs-fold (RFC 9112 section 5.2 allows refusing)",
    "proxy_protocol": "gw does not speak the PROXY protocol (nginx passes X-Forwarded-For)",
    "forwarded_allow_ips": "gw resolves forwarded headers itself (gunicorn's is set to '')",
}

# Cases whose option does not change how their bytes are read: run them with gw's settings.
SETTING_IRRELEVANT = {
    "valid/pp_03": "proxy_protocol=auto and the bytes carry no PROXY header: plain HTTP",
    "invalid/pp_01": "without the PROXY protocol, 'PROXY TCP4 ...' is a malformed request line",
    "invalid/pp_02": "without the PROXY protocol, 'PROXY TCP4 ...' is a malformed request line",
    "invalid/pp_03": "without the PROXY protocol, 'PROXY TCP4 ...' is a malformed request line",
}


# A refusal: any 4xx; 501 (a transfer coding or method not implemented) and 505 (an HTTP
# version not supported) are the 5xx answers RFC 9110 gives for a client's request.
def refusal(status: int) -> bool:
    return 400 <= status < 500 or status in (501, 505)


# Invalid cases that end inside a message: the client is gone, so no answer is also right.
TRUNCATED = frozenset({"NoMoreData", "ChunkMissingTerminator"})


HOST = b"gw.test"


def with_host(case: Case) -> Case | None:
    """``case`` with ``Host: gw.test`` after each HTTP/1.1 request line that lacks a Host.

    Returns None when no request needed one (or a request line cannot be found).
    """
    data, position, expected, added = case.data, 0, [], False
    for request in case.expected:
        line = f"{request.method} {request.raw_uri} HTTP/".encode("latin-1")
        at = data.find(line, position)
        if at < 0:
            return None
        cut = data.index(b"\r\n", at) + 2
        position = cut
        if request.version != (1, 1) or any(n == "HOST" for n, _ in request.headers):
            expected.append(request)
            continue
        data = data[:cut] + b"Host: " + HOST + b"\r\n" + data[cut:]
        headers = (("HOST", HOST.decode()), *request.headers)
        expected.append(ExpectedRequest(**{**request.__dict__, "headers": headers}))
        added = True
    if not added:
        return None
    return Case(case.kind, case.name + "+host", data, case.settings, tuple(expected))


def skip_reason(case: Case) -> str | None:
    if case.id in SETTING_IRRELEVANT:
        return None
    unused = [
        f"{k}={v!r}: {UNUSED_SETTINGS[k]}" for k, v in case.settings.items() if k in UNUSED_SETTINGS
    ]
    return f"tests a gunicorn option gw does not use ({'; '.join(unused)})" if unused else None


def limits_of(case: Case) -> Limits:
    """The limits to run ``case`` with: those its ``.py`` sets, and for a case about a limit,
    gunicorn's defaults where gw's differ (gw raises limit_request_line from 4094 to 8190)."""
    if case.id in SETTING_IRRELEVANT:
        return ()
    limits = {k: int(v) for k, v in case.settings.items() if k in LIMIT_SETTINGS}
    if case.error.startswith("Limit"):
        for name, gunicorn_default in GUNICORN_LIMITS.items():
            if GW_LIMITS[name] != gunicorn_default:
                limits.setdefault(name, gunicorn_default)
    return tuple(sorted(limits.items()))


def served(case: Case, worker: str) -> list[ExpectedRequest]:
    """The requests a server answers on one connection: up to the first that ends it (the
    first one for gunicorn's sync worker, which closes every connection after one answer)."""
    out = []
    for request in case.expected:
        out.append(request)
        if not request.persistent or worker == "sync":
            break
    return out


def all_cases(corpus: list[Case]) -> list[Case]:
    variants = [with_host(c) for c in corpus if c.kind == "valid"]
    return corpus + [v for v in variants if v is not None]


@functools.cache
def corpus_cases() -> list[Case]:
    """Every case and Host variant; empty when the corpus is unavailable (the
    ``gunicorn_corpus`` fixture then fails on CI and skips locally)."""
    try:
        return all_cases(load_cases(corpus_root()))
    except CorpusUnavailable:
        return []
