"""API keys: only digests are stored; a presented key maps to its consumer and role."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gw.auth.apikeys import ApiKeyStore, hash_api_key, load_key_file
from gw.auth.settings import ApiKeyEntry, ApiKeySettings
from gw.errors import ConfigError

KEY = "gwk_live_9f8e7d6c5b4a"


def entry(key: str = KEY, id: str = "mobile", consumer: str = "app_mobile") -> dict[str, str]:
    return {"id": id, "sha256": hash_api_key(key), "consumer": consumer, "role": "partner"}


def test_hash_is_sha256_hex_of_the_utf8_key() -> None:
    assert hash_api_key("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_documented_operator_command_prints_the_digest() -> None:
    command = (
        "import sys; from gw.auth.apikeys import hash_api_key; "
        'print(hash_api_key(sys.stdin.readline().rstrip("\\n")))'
    )
    result = subprocess.run(
        [sys.executable, "-c", command],
        input=KEY + "\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.stdout.strip() == hash_api_key(KEY)


def test_lookup_finds_the_consumer_and_role() -> None:
    store = ApiKeyStore([ApiKeyEntry.model_validate(entry())])
    found = store.lookup(KEY)
    assert found is not None
    assert (found.id, found.consumer, found.role) == ("mobile", "app_mobile", "partner")


@pytest.mark.parametrize(
    "presented", ["", "gwk_live_9f8e7d6c5b4", KEY + " ", KEY.upper(), "x" * 600]
)
def test_anything_but_the_exact_key_is_unknown(presented: str) -> None:
    store = ApiKeyStore([ApiKeyEntry.model_validate(entry())])
    assert store.lookup(presented) is None


def test_duplicate_ids_or_keys_are_refused() -> None:
    with pytest.raises(ConfigError):
        ApiKeyStore([ApiKeyEntry.model_validate(e) for e in (entry(), entry(key="other"))])
    with pytest.raises(ConfigError):
        ApiKeyStore([ApiKeyEntry.model_validate(e) for e in (entry(), entry(id="again"))])


def test_keys_file_in_yaml(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(
        f"- id: mobile\n  sha256: {hash_api_key(KEY)}\n  consumer: app_mobile\n  role: partner\n"
    )
    store = ApiKeyStore.from_settings(ApiKeySettings(file=str(path)))
    assert store.lookup(KEY) is not None


def test_keys_file_in_json_with_a_keys_list(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": [entry()]}))
    inline = [ApiKeyEntry.model_validate(entry(key="inline", id="ops", consumer="ops"))]
    store = ApiKeyStore.from_settings(ApiKeySettings(keys=inline, file=str(path)))
    assert len(store) == 2
    assert store.lookup("inline") is not None and store.lookup(KEY) is not None


def test_missing_keys_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_key_file(str(tmp_path / "nope.yaml"))
    [problem] = info.value.problems
    assert problem == f"api_keys.file: cannot read {tmp_path}/nope.yaml (No such file or directory)"


def test_bad_entry_in_keys_file_names_its_position(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps([entry(), {"id": "x", "sha256": "zz", "consumer": "c"}]))
    with pytest.raises(ConfigError) as info:
        load_key_file(str(path))
    [problem] = info.value.problems
    assert problem.startswith(f"api_keys.file {path} [1].sha256: must be the 64-character")


def test_keys_file_must_hold_a_list(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("mobile: abc\n")
    with pytest.raises(ConfigError):
        load_key_file(str(path))


def test_consumer_that_cannot_be_a_header_is_refused_at_load() -> None:
    bad = ApiKeyEntry.model_validate(entry(consumer="app\r\nX-Admin: 1"))
    with pytest.raises(ConfigError) as info:
        ApiKeyStore.from_settings(ApiKeySettings(keys=[bad]))
    assert "consumer" in info.value.problems[0]
