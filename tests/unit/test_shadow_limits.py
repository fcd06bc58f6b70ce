"""Shadow limits (``mode: shadow``): decided and counted like enforced ones, never refusing."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from gw.cli import main
from gw.errors import ConfigError
from gw.limits import LimiterUnavailable, Rate
from gw.limits.admission import Admission, RateLimited, Requester, explain_bucket
from gw.limits.local import LocalLimiter
from gw.limits.settings import RateLimitingSettings
from gw.observe.sampled import SampledLog
from tests.support.ratelimit_observer import told

WHO = Requester(client_ip="10.0.0.1", route="api", headers={}, request_id="rid-1")


def _admission(
    limits: list[dict[str, object]], limiter: object | None = None
) -> tuple[Admission, list[tuple[str, str, str]]]:
    settings = RateLimitingSettings.model_validate(
        {"overrides": [{"path": "/x/**", "limits": limits}]}
    )
    backend = limiter or LocalLimiter()
    admission = Admission(settings, lambda: backend)  # type: ignore[arg-type, return-value]
    seen: list[tuple[str, str, str]] = []
    admission.observe = told(seen)
    return admission, seen


def _admit_n(admission: Admission, n: int) -> list[list[tuple[str, str]]]:
    limits = admission.limits_for("GET", "/x/a")
    return [admission.admit(limits, WHO) for _ in range(n)]


def test_a_shadow_limit_never_refuses_and_counts_each_would_be_rejection() -> None:
    admission, seen = _admission([{"name": "probe", "requests_per_minute": 1, "mode": "shadow"}])
    assert _admit_n(admission, 5) == [[]] * 5  # no quota headers by default
    assert seen == [("probe", "allowed", "shadow")] + [("probe", "rejected", "shadow")] * 4


def test_shadow_headers_shows_the_shadow_limits_quota() -> None:
    admission, _ = _admission(
        [{"name": "probe", "requests_per_minute": 2, "mode": "shadow", "shadow_headers": True}]
    )
    remaining = [dict(h).get("X-RateLimit-Remaining") for h in _admit_n(admission, 3)]
    assert remaining == ["1", "0", "0"]


def test_an_enforced_limit_beside_a_shadow_one_refuses_alone() -> None:
    admission, seen = _admission(
        [
            {"name": "real", "requests_per_minute": 3},
            {"name": "probe", "requests_per_minute": 1, "mode": "shadow"},
        ]
    )
    answers = _admit_n(admission, 3)
    assert [dict(h)["RateLimit-Policy"] for h in answers] == ['"real";q=3;w=60'] * 3
    with pytest.raises(RateLimited):
        _admit_n(admission, 1)
    real = [d for d in seen if d[2] == "enforce"]
    shadow = [d for d in seen if d[2] == "shadow"]
    assert real == [("real", "allowed", "enforce")] * 3 + [("real", "rejected", "enforce")]
    # The shadow limit sees only the requests the enforced ones admitted.
    assert shadow == [("probe", "allowed", "shadow")] + [("probe", "rejected", "shadow")] * 2


def test_a_shadow_when_missing_reject_is_a_would_be_rejection_not_a_401() -> None:
    admission, seen = _admission(
        [{"name": "u", "requests_per_minute": 5, "key": "user", "when_missing": "reject",
          "mode": "shadow"}]
    )  # fmt: skip
    assert _admit_n(admission, 2) == [[], []]
    assert seen == [("u", "rejected", "shadow")] * 2


class _Down:
    def check_all(self, buckets: object, cost: int = 1) -> list[object]:
        raise LimiterUnavailable("down")


def test_a_failing_backend_never_refuses_for_a_shadow_limit_even_fail_closed() -> None:
    settings = RateLimitingSettings.model_validate(
        {"on_error": "fail_closed", "default": {"requests_per_minute": 1, "mode": "shadow"}}
    )
    admission = Admission(settings, lambda: _Down())  # type: ignore[arg-type, return-value]
    seen: list[tuple[str, ...]] = []
    admission.observe = told(seen)
    assert admission.admit(admission.limits_for("GET", "/"), WHO) == []
    assert seen == [("default", "failed_open", "shadow")]


def test_shadow_headers_without_shadow_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        _admission([{"requests_per_minute": 1, "shadow_headers": True}])
    assert info.value.problems == [
        "rate_limiting.overrides[0].limits[0].shadow_headers: needs mode: shadow"
    ]


def test_explain_says_a_limit_is_shadow() -> None:
    admission, _ = _admission([{"name": "probe", "requests_per_minute": 1, "mode": "shadow"}])
    [limit] = admission.limits_for("GET", "/x/a")
    line, key, refused = explain_bucket(limit, WHO)
    assert line == "probe (1/60s key client_ip, shadow: never refuses): bucket probe|ip:10.0.0.1"
    assert key == "probe|ip:10.0.0.1" and refused is None


def test_would_be_rejections_are_logged_with_what_the_limit_would_have_said(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A name of its own: the sampled log's budget is per limit name, per process.
    admission, _ = _admission([{"name": "logged", "requests_per_minute": 1, "mode": "shadow"}])
    with caplog.at_level(logging.WARNING, logger="gw.audit"):
        _admit_n(admission, 2)
    lines = [r.getMessage() for r in caplog.records if r.name == "gw.audit"]
    assert len(lines) == 1
    assert '"event":"ratelimit_shadow","decision":"would_reject","limit":"logged"' in lines[0]
    assert '"request_id":"rid-1"' in lines[0] and '"retry_after":60' in lines[0]


def test_the_sampled_log_writes_at_most_n_per_second_per_subject_then_says_how_many_it_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.2]
    sampled = SampledLog(logging.getLogger("gw.audit"), per_second=2, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="gw.audit"):
        written = [sampled.write("a", {"n": i}) for i in range(5)]
        assert sampled.write("b", {"n": 0})  # another subject has its own budget
        now[0] = 101.0
        assert sampled.write("a", {"n": 5})
    assert written == [True, True, False, False, False]
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ['{"n":0}', '{"n":1}', '{"n":0}', '{"n":5,"suppressed":3}']


def test_rate_is_unchanged_by_shadow() -> None:
    admission, _ = _admission([{"name": "p", "requests_per_minute": 7, "mode": "shadow"}])
    (limit,) = admission.limits_for("GET", "/x/a")
    assert limit.rate == Rate(7, 60.0) and limit.shadow and not limit.shadow_headers


def test_gw_check_accepts_shadow_modes_and_refuses_shadow_headers_on_an_enforced_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = {
        "upstreams": {"svc": {"targets": ["http://127.0.0.1:9"]}},
        "routes": [{"path": "/**", "upstream": "svc", "auth": "shadow"}],
        "auth": {"issuer": "https://idp.test", "secret": "s" * 48, "audiences": ["api"]},
        "rate_limiting": {"default": {"requests_per_minute": 1, "mode": "shadow"}},
    }
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["check", "-c", str(path)]) == 0
    config["rate_limiting"] = {"default": {"requests_per_minute": 1, "shadow_headers": True}}
    path.write_text(yaml.safe_dump(config))
    assert main(["check", "-c", str(path)]) == 1
    assert "rate_limiting.default.shadow_headers: needs mode: shadow" in capsys.readouterr().err
