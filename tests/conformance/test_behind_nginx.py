"""The hostile corpora behind the real nginx drop-in (deploy/nginx/gw.conf as shipped):
gunicorn's invalid requests and the smuggling classes, nginx -> gw (unix socket) -> upstream.

Same assertions as without nginx: nothing invalid or smuggled reaches the upstream, and each
client answer is the upstream's answer to that client's own request. nginx treats a client's
half-close as an abort (499), so these connections stay open and the read ends on the expected
answer count (or a short timeout); only the cases whose bytes end inside a message half-close.

The gateway behind nginx runs the default worker class; set
``GW_CONFORMANCE_NGINX_WORKERS=gevent,gthread,sync`` to run every class.
"""

from __future__ import annotations

import os

import pytest

from tests.conformance.conftest import NginxStack
from tests.conformance.corpus_rules import (
    TRUNCATED,
    corpus_cases,
    limits_of,
    refusal,
    skip_reason,
)
from tests.conformance.differential import differential
from tests.conformance.framing import SMUGGLING, attack_stream, slug
from tests.support.corpus import Case
from tests.support.recorder import Recorder
from tests.support.wire import exchange

pytestmark = pytest.mark.integration

# Invalid cases nginx reads in its own, lenient way and forwards normalized: gw never sees the
# offending bytes, so the gate checks that what reaches the upstream is one harmless request.
NGINX_NORMALIZES = {
    "invalid/rfc9110_trailer_forbidden_cl_01": "nginx de-chunks the body and drops trailers",
    "invalid/rfc9110_trailer_forbidden_host_01": "nginx de-chunks the body and drops trailers",
    "invalid/rfc9110_trailer_forbidden_te_01": "nginx de-chunks the body and drops trailers",
    "invalid/rfc9112_bare_lf_01": "nginx accepts a bare LF as a line end and sends CRLF on",
    "invalid/rfc9112_leading_crlf_02": "nginx skips any number of empty lines before a request",
}
# The trailer values those cases send: none may reach the upstream's header section.
FORBIDDEN_VALUES = ("evil.example.com", "99")

NGINX_WORKERS = os.environ.get("GW_CONFORMANCE_NGINX_WORKERS", "gevent").split(",")


@pytest.fixture(params=NGINX_WORKERS, scope="session")
def stack(request: pytest.FixtureRequest, nginx_stacks: object) -> NginxStack:
    return nginx_stacks(str(request.param))  # type: ignore[operator]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        cases = [c for c in corpus_cases() if c.kind == "invalid"]
        metafunc.parametrize("case", cases or [None], ids=[c.id for c in cases] or ["unavailable"])


def test_invalid_case_behind_nginx_never_reaches_the_upstream(
    case: Case | None, gunicorn_corpus: list[Case], stack: NginxStack, recorder: Recorder
) -> None:
    assert case is not None
    reason = skip_reason(case)
    if reason:
        pytest.skip(reason)
    if limits_of(case):
        pytest.skip("tests gunicorn limits set for this case; nginx's own limits apply first")
    mark = recorder.mark()
    truncated = case.error in TRUNCATED
    result = exchange(stack.port, case.data, expect=1, half_close=truncated, timeout=4.0)
    recorder.settle(mark)
    reached = recorder.since(mark)
    if case.id in NGINX_NORMALIZES:
        assert len(reached) <= 1, f"{case.id}: {[(r.method, r.target) for r in reached]}"
        leaked = [(n, v) for r in reached for n, v in r.headers if v in FORBIDDEN_VALUES]
        assert not leaked, f"{case.id} ({NGINX_NORMALIZES[case.id]}): upstream got {leaked}"
        seqs = [a.header("x-upstream-seq") for a in result.answers if a.status == 200]
        assert seqs == [str(r.seq) for r in reached], f"{case.id}: answers {seqs}"
        return
    assert not reached, (
        f"{case.id} ({case.error}) reached the upstream through nginx: "
        f"{[(r.method, r.target, r.body[:60]) for r in reached]}; client got {result.statuses}"
    )
    if truncated and not result.answers:
        return
    assert result.answers and refusal(result.answers[0].status), (
        f"{case.id} ({case.error}) through nginx: client got {result.statuses}"
    )


@pytest.mark.parametrize("name", sorted(SMUGGLING))
def test_smuggling_class_behind_nginx_never_desyncs(
    name: str, stack: NginxStack, recorder: Recorder
) -> None:
    data = attack_stream(name)
    after = frozenset({f"/after/{slug(name)}"})
    verdict = differential(stack.port, data, recorder, half_close=False, after_refusal=after)
    assert not verdict.problems, f"{name} through nginx:\n{verdict.explain(data)}"
