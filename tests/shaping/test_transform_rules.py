"""Transformations: seed 003's block unchanged, field paths, header rules, and bodies that must
pass through untouched."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from gw.errors import ConfigError
from gw.shaping.settings import TransformationSettings
from gw.shaping.transform import Rules, Transformer, parse_field_path
from tests.data.seeds import SEED_003_TRANSFORMATIONS

USER = {
    "id": "usr_8a3f",
    "internal_id": 991,
    "name": "Alice Chen",
    "email_address": "alice@example.com",
    "db_shard": "eu-3",
    "feature_flags": {"beta": True},
    "created_by_admin": False,
    "membership": "premium",
}


def transformer(*entries: dict[str, Any]) -> Transformer:
    return Transformer.compile([TransformationSettings.model_validate(e) for e in entries])


def rules_for(path: str, *entries: dict[str, Any]) -> Rules:
    rules = transformer(*entries).for_path(path)
    assert rules is not None
    return rules


def json_response(value: Any, **extra: str) -> tuple[list[tuple[str, str]], bytes]:
    body = json.dumps(value).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    return headers + list(extra.items()), body


def respond(rules: Rules, value: Any, **extra: str) -> tuple[list[tuple[str, str]], Any]:
    headers, body = json_response(value, **extra)
    assert rules.wants_body(200, headers)
    new_headers, new_body = rules.apply(200, headers, body)
    assert dict(new_headers)["Content-Length"] == str(len(new_body))
    return new_headers, json.loads(new_body)


def seed_rules(path: str = "/api/users/usr_8a3f") -> Rules | None:
    entries = json.loads(SEED_003_TRANSFORMATIONS)["transformations"]
    return transformer(*entries).for_path(path)


def test_seed_003_block_removes_internal_fields_and_renames_email() -> None:
    rules = seed_rules()
    assert rules is not None
    _, user = respond(rules, USER)
    assert user == {
        "id": "usr_8a3f",
        "name": "Alice Chen",
        "email": "alice@example.com",
        "membership": "premium",
    }
    assert list(user) == ["id", "name", "email", "membership"]  # rename keeps the position


def test_seed_003_block_leaves_other_paths_alone() -> None:
    assert seed_rules("/api/orders/ord_x7k9") is None
    assert seed_rules("/api/users") is not None  # '**' matches zero segments too
    assert Transformer.compile([]).for_path("/api/users/1") is None


def test_nested_and_array_field_paths() -> None:
    rules = rules_for(
        "/x",
        {
            "path": "/x",
            "response": {
                "remove_fields": ["profile.internal_id", "items[].db_shard", "grid[][].secret"],
                "rename_fields": {"items[].email_address": "email"},
            },
        },
    )
    value = {
        "profile": {"internal_id": 1, "name": "a"},
        "items": [{"db_shard": 1, "email_address": "e", "n": 1}, {"n": 2}, "not an object"],
        "grid": [[{"secret": 1, "v": 1}], []],
    }
    _, result = respond(rules, value)
    assert result == {
        "profile": {"name": "a"},
        "items": [{"email": "e", "n": 1}, {"n": 2}, "not an object"],
        "grid": [[{"v": 1}], []],
    }


def test_top_level_array_path() -> None:
    rules = rules_for("/x", {"path": "/x", "response": {"remove_fields": ["[].db_shard"]}})
    _, result = respond(rules, [{"id": 1, "db_shard": 2}, {"id": 3}])
    assert result == [{"id": 1}, {"id": 3}]


def test_rename_onto_an_existing_key_replaces_it() -> None:
    rules = rules_for("/x", {"path": "/x", "response": {"rename_fields": {"new_name": "name"}}})
    _, result = respond(rules, {"name": "old", "id": 1, "new_name": "new"})
    assert result == {"id": 1, "name": "new"}


def test_removal_happens_before_rename() -> None:
    response = {"remove_fields": ["email"], "rename_fields": {"email_address": "email"}}
    rules = rules_for("/x", {"path": "/x", "response": response})
    _, result = respond(rules, {"email": "stale", "email_address": "fresh"})
    assert result == {"email": "fresh"}


def test_every_matching_entry_applies_most_specific_last() -> None:
    rules = rules_for(
        "/api/users/1",
        {"path": "/api/**", "response": {"add_headers": {"X-Layer": "api"}}},
        {"path": "/api/users/{id}", "response": {"add_headers": {"X-Layer": "users"}}},
        {"path": "/api/users/**", "response": {"remove_fields": ["secret"]}},
    )
    headers, result = respond(rules, {"id": 1, "secret": 2})
    assert result == {"id": 1}
    assert [v for n, v in headers if n == "X-Layer"] == ["users"]


def test_changed_body_gets_weak_etag_and_loses_digests() -> None:
    rules = seed_rules()
    assert rules is not None
    headers, _ = respond(rules, USER, ETag='"v1"', **{"Content-MD5": "abc"})
    names = dict(headers)
    assert names["ETag"] == 'W/"v1"' and "Content-MD5" not in names


def test_body_with_nothing_to_change_is_returned_byte_for_byte() -> None:
    rules = seed_rules()
    assert rules is not None
    body = b'{ "id": 1,   "total": 129.00 }'
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
               ("ETag", '"v1"')]  # fmt: skip
    assert rules.apply(200, headers, body) == (headers, body)


@pytest.mark.parametrize(
    ("extra_headers", "why"),
    [
        ([("Content-Type", "text/html")], "not JSON"),
        ([("Content-Type", "application/json; charset=utf-16")], "not UTF-8"),
        ([("Content-Type", "application/json"), ("Content-Encoding", "gzip")], "compressed"),
    ],
)
def test_ineligible_body_passes_through_untouched(
    extra_headers: list[tuple[str, str]], why: str
) -> None:
    rules = seed_rules()
    assert rules is not None
    body = json.dumps(USER).encode()
    headers = [*extra_headers, ("Content-Length", str(len(body)))]
    assert not rules.wants_body(200, headers), why
    assert rules.apply(200, headers, body) == (headers, body)


def test_unknown_length_or_too_large_is_streamed_not_buffered() -> None:
    entry = {"path": "/x", "response": {"remove_fields": ["a"]}, "max_body_bytes": 100}
    rules = rules_for("/x", entry)
    assert not rules.wants_body(200, [("Content-Type", "application/json")])
    big_headers, big_body = json_response({"a": "x" * 200})
    assert not rules.wants_body(200, big_headers)
    assert rules.apply(200, big_headers, big_body) == (big_headers, big_body)
    assert not rules.wants_body(304, json_response({"a": 1})[0])


def test_json_suffix_types_and_error_statuses_are_transformed() -> None:
    rules = seed_rules()
    assert rules is not None
    body = json.dumps({"error": "x", "internal_id": 5}).encode()
    headers = [("Content-Type", "application/problem+json"), ("Content-Length", str(len(body)))]
    assert rules.wants_body(404, headers)
    _, new_body = rules.apply(404, headers, body)
    assert json.loads(new_body) == {"error": "x"}


@pytest.mark.parametrize("body", [b"{not json", b'{"a": NaN}', b'{"a": 1e999}'])
def test_body_that_is_not_standard_json_passes_through(body: bytes) -> None:
    rules = seed_rules()
    assert rules is not None
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    assert rules.apply(200, headers, body) == (headers, body)


def test_lone_surrogate_survives_as_an_escape() -> None:
    rules = seed_rules()
    assert rules is not None
    body = b'{"name": "\\ud800", "internal_id": 1}'
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    _, new_body = rules.apply(200, headers, body)
    assert new_body == b'{"name":"\\ud800"}'


def test_header_rules_on_both_sides() -> None:
    rules = rules_for(
        "/x",
        {
            "path": "/x",
            "request": {"add_headers": {"X-Api-Version": "2"}, "remove_headers": ["cookie"]},
            "response": {
                "add_headers": {"Cache-Control": "no-store"},
                "remove_headers": ["Server"],
            },
        },
    )
    sent = rules.request_headers({"Cookie": "a=1", "x-api-version": "1", "Accept": "*/*"})
    assert sent == {"Accept": "*/*", "X-Api-Version": "2"}
    back = rules.response_headers(
        [("Server", "internal/1.2"), ("cache-control", "max-age=60"), ("Content-Length", "3")]
    )
    assert back == [("Content-Length", "3"), ("Cache-Control", "no-store")]


@pytest.mark.parametrize(
    ("path", "valid"),
    [
        ("name", ("name",)),
        ("a.b.c", ("a", "b", "c")),
        ("items[].id", ("items", "[]", "id")),
        ("[].id", ("[]", "id")),
        ("a[][].b", ("a", "[]", "[]", "b")),
        ("items[]", None),
        ("a..b", None),
        ("", None),
        ("a.[].b", None),
        ("a[x].b", None),
    ],
)
def test_field_path_syntax(path: str, valid: tuple[str, ...] | None) -> None:
    if valid is None:
        with pytest.raises(ValueError):
            parse_field_path(path)
    else:
        assert parse_field_path(path) == valid


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ({"path": "api/users"}, "must start with '/'"),
        ({"path": "/x", "response": {"remove_fields": ["a..b"]}}, "field path 'a..b'"),
        (
            {"path": "/x", "response": {"rename_fields": {"a.b": "c.d"}}},
            "a rename keeps the value in the same object",
        ),
        ({"path": "/x", "request": {"add_headers": {"X-User-Id": "admin"}}}, "managed by"),
        ({"path": "/x", "response": {"remove_headers": ["Content-Length"]}}, "managed by"),
        ({"path": "/x", "response": {"add_headers": {"X-A": "a\r\nSet-Cookie: x"}}}, "control"),
        ({"path": "/x", "response": {"add_headers": {"Bad Name": "v"}}}, "not a valid header"),
        ({"path": "/x", "response": {"drop_fields": ["a"]}}, "Extra inputs are not permitted"),
    ],
)
def test_bad_entries_are_refused_with_a_reason(entry: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError) as info:
        TransformationSettings.model_validate(entry)
    assert says in str(info.value)


def test_two_entries_for_the_same_paths_are_refused() -> None:
    with pytest.raises(ConfigError) as info:
        transformer({"path": "/api/{a}"}, {"path": "/api/{b}"})
    assert info.value.problems == [
        "transformations[1].path: '/api/{b}' matches exactly the same paths as "
        "transformations[0]; merge the two entries"
    ]


def test_rename_target_may_repeat_the_parent_path() -> None:
    rules = rules_for(
        "/x", {"path": "/x", "response": {"rename_fields": {"profile.mail": "profile.email"}}}
    )
    _, result = respond(rules, {"profile": {"mail": "m"}})
    assert result == {"profile": {"email": "m"}}
