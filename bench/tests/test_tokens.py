"""Tokens for the gw-full rows, the wrk script's use of them, and per-worker request counts."""

from __future__ import annotations

import json
import urllib.request

import jwt
import pytest
from proxybench import tokens, workers
from proxybench.keyserver import KeyServer
from proxybench.targets import AuthSetup


def test_hs256_tokens_verify_with_the_secret_one_user_each() -> None:
    found = tokens.mint("HS256", users=3)
    assert found.secret is not None and found.jwks is None
    subjects = [
        jwt.decode(t, found.secret, algorithms=["HS256"], audience=tokens.AUDIENCE)["sub"]
        for t in found.tokens
    ]
    assert subjects == ["usr_bench_01", "usr_bench_02", "usr_bench_03"]


def test_rs256_tokens_verify_with_the_served_key_set() -> None:
    found = tokens.mint("RS256", users=2)
    server = KeyServer(found.jwks or {}).start()
    try:
        with urllib.request.urlopen(server.url, timeout=5) as resp:
            served = json.load(resp)
    finally:
        server.stop()
    key = jwt.PyJWKSet.from_dict(served)[tokens.KID].key
    claims = jwt.decode(found.tokens[1], key, algorithms=["RS256"], audience=tokens.AUDIENCE)
    assert claims["sub"] == "usr_bench_02" and claims["iss"] == tokens.ISSUER
    assert claims["exp"] == tokens.EXPIRES and server.fetches == 1


def test_credentials_survive_the_trip_through_json() -> None:
    found = tokens.mint("HS256", users=1)
    assert tokens.Credentials.from_json(found.to_json()) == found


def test_unknown_algorithm_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        tokens.mint("ES256")


def test_gw_gets_the_secret_or_the_jwks_url() -> None:
    hs = tokens.Credentials("HS256", ("t",), secret="s" * 48)
    assert AuthSetup(hs).key_setting() == f'secret: "{"s" * 48}"'
    rs = tokens.Credentials("RS256", ("t",), jwks={"keys": []})
    assert AuthSetup(rs, "http://127.0.0.1:1/k").key_setting() == 'jwks_uri: "http://127.0.0.1:1/k"'
    with pytest.raises(ValueError):
        AuthSetup(rs).key_setting()


def test_worker_lines_count_only_that_pid() -> None:
    log = b'{"status":200,"worker":123,"user":"a"}\n{"worker":1234,"user":"b"}\n{"worker":123}\n'
    assert workers.count_worker_lines(log, 123) == 2
    assert workers.count_worker_lines(log, 1234) == 1


def test_node_counts_are_read_in_order() -> None:
    log = b"express proxy 7 listening\nWORKERREQS 7 10\nWORKERREQS 77 5\nWORKERREQS 7 25\n"
    assert workers.node_counts(log, 7) == [10, 25]
    assert workers.delta((1.0, 10), (1.5, 25)) == (0.5, 15)
    assert workers.delta(None, (1.5, 25)) == (None, None)
