"""gunicorn's request corpus, sent byte for byte to a real gw under every worker class.

The corpus comes from the sdist of the installed gunicorn (``tests.support.corpus``); nobody
here wrote it. Each case runs on one fresh connection to a long-lived gateway (one per worker
class) whose only route sends every path and method to a recording upstream (h11).

- invalid case: the answer is a 4xx (or 501 for a transfer coding or method the server does
  not implement, 505 for an HTTP version it does not support; or no answer at all when the
  bytes end inside a message, as in gunicorn's ``NoMoreData`` cases), and no request reaches
  the upstream, and gw keeps no upstream connection holding part of a request;
- valid case: the upstream receives the equivalent request(s) (method, target with gw's path
  rules, the headers gw forwards, body bytes), each client answer is the upstream's answer to
  that request, in order; except the deliberate deviations listed in ``DEVIATIONS``, each
  with its reason, which must be refused (nothing reaches the upstream) or rewritten as
  stated.

"Reaches the upstream" means a complete request: a streamed body that gw abandons when it
finds the client's framing broken is cut off mid-message, which the upstream never acts on.

Cases whose ``.py`` sets a non-default gunicorn option are run with the same limits (gw exposes
``limit_request_*`` as ``GW_LIMIT_*``) or skipped when gw does not use the option; cases about
a limit run with gunicorn's default where gw's differs (request line: 4094, gw's is 8190).
Valid HTTP/1.1 cases without Host also run as a ``+host`` variant (``Host: gw.test`` added), so
that their bodies and pipelining stay under test once gw refuses a missing Host.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.conformance.conftest import GatewayPool
from tests.conformance.corpus_rules import (
    TRUNCATED,
    all_cases,
    corpus_cases,
    limits_of,
    refusal,
    served,
    skip_reason,
)
from tests.conformance.expectations import forwarded, mismatches, target_refused
from tests.support.corpus import Case
from tests.support.recorder import Mark, Recorder
from tests.support.wire import Exchange, exchange

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Deviation:
    """Where gw deliberately differs from gunicorn's reading of a valid case."""

    reason: str
    targets: tuple[str, ...] = ()  # rewritten: the targets the upstream receives instead
    truncated: bool = False  # the bytes end inside the message: no answer is right too
    forwarded: int = 0  # only the first N requests are forwarded, the one after is refused
    workers: frozenset[str] | None = None  # where it applies (None: every worker class)

    @property
    def refused(self) -> bool:
        return not self.targets and not self.forwarded


STRICT_HOST = (
    "Host '0.0.0.0=5000': gw's host grammar is letters, digits, '-', '.', '_' and IP literals "
    "(gw/core/hosts.py), stricter than RFC 3986's reg-name, so no Host value carries sub-delims or "
    "markup into X-Forwarded-Host, the cache key or an upstream's links"
)
LLHTTP = frozenset({"gevent"})  # gw's own server: llhttp's strict parsing
NO_HOST = "HTTP/1.1 without Host: RFC 9112 section 3.2 requires 400 (issue 11)"
CODING = "transfer coding other than a final chunked: 501 (RFC 9112 section 6.1, issue 11)"

# THE list of deliberate deviations from gunicorn's valid corpus, one reason per case.
DEVIATIONS: dict[str, Deviation] = {
    "valid/002": Deviation(STRICT_HOST),
    "valid/003": Deviation(STRICT_HOST),
    "valid/004": Deviation(NO_HOST),
    "valid/005": Deviation(NO_HOST + "; also '#' in the target (gw refuses fragments)"),
    "valid/006": Deviation(NO_HOST),
    "valid/007": Deviation(NO_HOST),
    "valid/010": Deviation(NO_HOST),
    "valid/011": Deviation(NO_HOST),
    "valid/012": Deviation(NO_HOST),
    "valid/013": Deviation(NO_HOST),
    "valid/014": Deviation(NO_HOST),
    "valid/018": Deviation(NO_HOST),
    "valid/021": Deviation(NO_HOST),
    "valid/022": Deviation(NO_HOST + " (the second request; the first is HTTP/1.0)", forwarded=1),
    "valid/023": Deviation(NO_HOST),
    "valid/025": Deviation(NO_HOST + "; and " + CODING),
    "valid/025_line": Deviation(NO_HOST + "; and " + CODING),
    "valid/029": Deviation(NO_HOST + "; and " + CODING + " ('identity' is not a coding)"),
    "valid/030": Deviation(NO_HOST + "; and " + CODING + " ('identity' is not a coding)"),
    "valid/031": Deviation(NO_HOST),
    "valid/099": Deviation(
        "the body ends after 8599 of its 17914 Content-Length bytes (gunicorn's parser reads "
        "to EOF): an incomplete request, never forwarded as a complete one",
        truncated=True,
    ),
    "valid/100": Deviation(NO_HOST),
    "valid/pp_02": Deviation(NO_HOST),
    "valid/rfc9112_smuggle_gzip_chunked_01": Deviation(CODING),
    "valid/rfc9112_smuggle_te_identity_chunked_01": Deviation(
        CODING + " ('identity' was removed from the registry by RFC 7230)"
    ),
    "valid/rfc9112_target_absolute_userinfo_01": Deviation(
        "userinfo in the target: RFC 9110 section 4.2.4 says to treat it as an error"
    ),
    "valid/rfc9112_target_asterisk_options_01": Deviation(
        "OPTIONS * asks about the server itself: no upstream route serves it"
    ),
    "valid/rfc9112_target_authority_connect_01": Deviation(
        "CONNECT: gw is not a forward proxy; tunnels are refused unless a route opts in"
    ),
    "valid/rfc9112_target_authority_ipv6_01": Deviation(
        "CONNECT: gw is not a forward proxy; tunnels are refused unless a route opts in"
    ),
    # The Host-carrying variants of the cases above (see ``with_host``) keep their bodies and
    # pipelining under test; these differ from gunicorn's reading for their own reasons.
    "valid/005+host": Deviation("'#' in the target: gw refuses fragments (gw/core/paths.py)"),
    "valid/025+host": Deviation(CODING),
    "valid/025_line+host": Deviation(CODING),
    "valid/029+host": Deviation(CODING + " ('identity' is not a coding)"),
    "valid/030+host": Deviation(CODING + " ('identity' is not a coding)"),
    "valid/013+host": Deviation(
        "whitespace around chunk extensions ('5; some; parameters=stuff'): llhttp refuses it; "
        "extensions are never forwarded, and refusing cannot desync anything",
        workers=LLHTTP,
    ),
    "valid/031+host": Deviation(
        "an unregistered method ('-BLARGH'): llhttp knows the registered methods only; "
        "gunicorn's parser (threaded and sync workers) forwards any token",
        workers=LLHTTP,
    ),
    "valid/100+host": Deviation(
        "'//' merged: gw canonicalizes the path (DESIGN 'Canonical path')",
        targets=("/keeping_slashes",),
    ),
}

# Invalid cases gw reads as one clean request, on purpose: (reason, worker classes).
ACCEPTED_INVALID: dict[str, tuple[str, frozenset[str]]] = {
    "invalid/rfc9112_leading_crlf_02": (
        "two empty lines before the request line: llhttp skips any number (RFC 9112 section "
        "2.2 asks a server to skip at least one); no framing depends on them",
        LLHTTP,
    ),
}

# -- parametrization: the corpus is only known once it is downloaded ------------------------


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" not in metafunc.fixturenames:
        return
    kind = "invalid" if "invalid" in metafunc.function.__name__ else "valid"
    cases = [c for c in corpus_cases() if c.kind == kind]
    metafunc.parametrize("case", cases or [None], ids=[c.id for c in cases] or ["unavailable"])


# -- the gates ----------------------------------------------------------------------------


def run_case(case: Case, worker: str, gateways: GatewayPool, recorder: Recorder) -> Exchange:
    reason = skip_reason(case)
    if reason:
        pytest.skip(reason)
    gateways.prestart([(worker, limits_of(c)) for c in corpus_cases()])
    gateway = gateways(worker, limits_of(case))
    return exchange(gateway.port, case.data, expect=max(1, len(case.expected)), timeout=4.0)


def assert_no_partial_request_left(
    recorder: Recorder, mark: Mark, case: Case, result: Exchange
) -> None:
    """gw never keeps an upstream connection on which it sent part of a request: the next
    request on it would become the rest of that message (DESIGN "Framing at both edges")."""
    left = recorder.midway(mark)
    assert not left, (
        f"{case.id}: gw left part of a request on upstream connection(s) it kept open: "
        f"{[(number, tail[-160:]) for number, tail in left]}; client got {result.statuses}"
    )


def test_invalid_case_is_refused_and_nothing_reaches_the_upstream(
    case: Case | None,
    worker: str,
    gunicorn_corpus: list[Case],
    gateways: GatewayPool,
    recorder: Recorder,
) -> None:
    assert case is not None
    mark = recorder.mark()
    errors_before = len(recorder.errors())
    result = run_case(case, worker, gateways, recorder)
    recorder.settle(mark)
    reached = recorder.since(mark)
    assert recorder.errors()[errors_before:] == [], "h11 could not read what gw sent upstream"
    assert_no_partial_request_left(recorder, mark, case, result)
    accepted = ACCEPTED_INVALID.get(case.id)
    if accepted is not None and worker in accepted[1]:
        # Documented: read as one clean request, which is all that may reach the upstream.
        assert len(reached) <= 1, f"{case.id} ({accepted[0]}): {len(reached)} requests"
        return
    assert not reached, (
        f"{case.id} ({case.error}) reached the upstream as {len(reached)} request(s): "
        f"{[(r.method, r.target, r.body[:60]) for r in reached]}; client got {result.statuses}"
    )
    if not result.answers and case.error in TRUNCATED:
        return
    assert result.answers, f"{case.id} ({case.error}): no answer; raw {result.raw[:200]!r}"
    status = result.answers[0].status
    assert refusal(status), (
        f"{case.id} ({case.error}): answered {result.statuses}, expected a refusal (4xx)"
    )


def test_valid_case_reaches_the_upstream_as_the_same_request(
    case: Case | None,
    worker: str,
    gunicorn_corpus: list[Case],
    gateways: GatewayPool,
    recorder: Recorder,
) -> None:
    assert case is not None
    deviation = DEVIATIONS.get(case.id)
    if deviation is not None and deviation.workers is not None and worker not in deviation.workers:
        deviation = None
    mark = recorder.mark()
    errors_before = len(recorder.errors())
    result = run_case(case, worker, gateways, recorder)
    recorder.settle(mark)
    reached = recorder.since(mark)
    assert recorder.errors()[errors_before:] == [], "h11 could not read what gw sent upstream"
    assert_no_partial_request_left(recorder, mark, case, result)
    if deviation is not None and deviation.refused:
        assert not reached, (
            f"{case.id} must be refused ({deviation.reason}) but reached the upstream as "
            f"{[(r.method, r.target) for r in reached]}; client got {result.statuses}"
        )
        if deviation.truncated and not result.answers:
            return
        assert result.answers and all(refusal(s) for s in result.statuses), (
            f"{case.id} must be refused ({deviation.reason}); client got {result.statuses}"
        )
        return
    expected = served(case, worker)
    if deviation is not None and deviation.forwarded:
        expected = expected[: deviation.forwarded]
    forwards = []
    for number, request in enumerate(expected):
        refused_path = target_refused(request.raw_uri)
        assert refused_path is None or deviation is not None, (
            f"gw's path rules refuse {request.raw_uri!r} ({refused_path}): "
            f"list {case.id} in DEVIATIONS"
        )
        want = forwarded(request)
        if deviation is not None and deviation.targets:
            want = type(want)(**{**want.__dict__, "target": deviation.targets[number]})
        forwards.append(want)
    got = [(r.method, r.target, len(r.body)) for r in reached]
    assert len(reached) == len(forwards), (
        f"{case.id}: the upstream got {got}, expected {[(f.method, f.target) for f in forwards]}; "
        f"client got {result.statuses}"
    )
    trailers = {n.lower() for r in case.expected for n, _ in r.trailers}
    for want, record in zip(forwards, reached, strict=True):
        problems = mismatches(want, record, trailers)
        assert not problems, f"{case.id}: {want.method} {want.target}: {problems}"
    seqs = [a.header("x-upstream-seq") for a in result.answers[: len(reached)]]
    assert seqs == [str(r.seq) for r in reached], (
        f"{case.id}: the client's answers {result.statuses} came from upstream requests {seqs}, "
        f"expected {[r.seq for r in reached]} in order"
    )
    if deviation is not None and deviation.forwarded and len(served(case, worker)) > len(reached):
        rest = result.statuses[len(reached) :]
        assert rest and refusal(rest[0]), (
            f"{case.id}: request {len(reached) + 1} must be refused ({deviation.reason}); "
            f"client got {result.statuses}"
        )


def test_deviations_name_real_cases(gunicorn_corpus: list[Case]) -> None:
    """The deviation list stays honest: every entry is a valid case (or its Host variant)."""
    known = {c.id for c in all_cases(gunicorn_corpus) if c.kind == "valid"}
    assert set(DEVIATIONS) <= known, sorted(set(DEVIATIONS) - known)
    for case in gunicorn_corpus:
        if case.kind != "valid" or skip_reason(case):
            continue
        lacks_host = any(
            r.version == (1, 1) and not any(n == "HOST" for n, _ in r.headers)
            for r in case.expected
        )
        listed = case.id in DEVIATIONS and NO_HOST in DEVIATIONS[case.id].reason
        assert lacks_host == listed, f"{case.id}: Host missing={lacks_host}, listed={listed}"
