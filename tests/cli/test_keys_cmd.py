"""`creditmeter keys create|list|revoke` as an admin runs them (the sub-app, in-process)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine
from typer.testing import CliRunner, Result

from cli.keys_cmd import keys_app
from meter.keys import Keys
from sync.apikeys import PREFIX_LEN, key_hash, looks_like_key, parse_replica_value, verify_key
from sync.settings import get_settings

SECRET = "test-secret-keys-cmd"


@pytest.fixture
def cli_env(sql_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("CREDITMETER_DATABASE_URL", sql_url)
    monkeypatch.setenv("CREDITMETER_SECRET_KEY", SECRET)
    monkeypatch.setenv("CREDITMETER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _run(*args: str) -> Result:
    return CliRunner().invoke(keys_app, list(args))


def _create(scope: str = "meter") -> tuple[str, str, Result]:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    result = _run("create", "--name", name, "--scope", scope)
    assert result.exit_code == 0, result.output
    return name, result.stdout.splitlines()[-1], result


def test_create_prints_the_key_alone_on_the_last_line(cli_env: None, engine: Engine) -> None:
    name, key, result = _create("admin")
    assert looks_like_key(key)
    assert result.stdout.endswith(key + "\n")
    assert result.stdout.count(key) == 1
    assert name in result.stdout and "admin" in result.stdout
    info = verify_key(engine, SECRET.encode(), key)
    assert info is not None and info.name == name and info.scope == "admin"


def test_list_shows_prefixes_never_keys(cli_env: None) -> None:
    name, key, _ = _create("read")
    result = _run("list")
    assert result.exit_code == 0, result.output
    line = next(row for row in result.stdout.splitlines() if name in row)
    assert key[:PREFIX_LEN] in line and "read" in line
    assert key not in result.stdout and key[PREFIX_LEN:] not in result.stdout


def test_revoke_then_the_key_no_longer_verifies(cli_env: None, engine: Engine) -> None:
    name, key, _ = _create("meter")
    result = _run("revoke", key[:PREFIX_LEN])
    assert result.exit_code == 0, result.output
    assert "revoked" in result.stdout and name in result.stdout
    assert verify_key(engine, SECRET.encode(), key) is None
    listed = next(row for row in _run("list").stdout.splitlines() if name in row)
    cells = [c.strip() for c in listed.strip("│ ").split("│")]
    assert cells[1:4] == [name, key[:PREFIX_LEN], "meter"]
    created, last_used, revoked = cells[4:]
    assert last_used == "-" and created.endswith("Z") and revoked.endswith("Z")
    again = _run("revoke", key[:PREFIX_LEN])
    assert again.exit_code == 0, again.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("create", "--name", "", "--scope", "read"), "key name must be"),
        (("revoke", "key_doesnotexist0000"), "no API key has id or prefix"),
    ],
)
def test_errors_are_one_line_and_exit_1(cli_env: None, args: tuple[str, ...], message: str) -> None:
    result = _run(*args)
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]


@pytest.mark.parametrize(
    ("scope_args", "message"),
    [
        ((), "error: --scope: is required; give one of read, meter, admin"),
        (("--scope", "write"), "error: --scope: is 'write'; give one of read, meter, admin"),
    ],
)
def test_a_missing_or_bad_scope_is_one_usage_error_line_and_exit_2(
    cli_env: None, scope_args: tuple[str, ...], message: str
) -> None:
    result = _run("create", "--name", "x", *scope_args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [message]


def test_create_and_revoke_update_the_api_key_replica_in_redis(
    cli_env: None,
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    redis_sync: redis.Redis,
    key_prefix: str,
) -> None:
    """With CREDITMETER_REDIS_URL set, the API's replica follows at once (issue 12)."""
    monkeypatch.setenv("CREDITMETER_REDIS_URL", redis_url)
    monkeypatch.setenv("CREDITMETER_KEY_PREFIX", key_prefix)
    get_settings.cache_clear()
    replica_name = Keys(prefix=key_prefix).api_keys()
    _, key, _ = _create("read")
    digest = key_hash(SECRET.encode(), key)
    entry = parse_replica_value(redis_sync.hget(replica_name, digest))
    assert entry is not None and entry.prefix == key[:PREFIX_LEN] and entry.scope == "read"
    assert _run("revoke", key[:PREFIX_LEN]).exit_code == 0
    assert redis_sync.hget(replica_name, digest) is None


def test_list_piped_at_80_columns_shows_whole_ids_and_names(
    cli_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a terminal (CliRunner is not one): the row is as wide as its values, so the id
    that `keys revoke` takes can be read, or grepped, from the piped table."""
    monkeypatch.setenv("COLUMNS", "80")
    name = f"a key for the nightly reporting robot of team {uuid.uuid4().hex[:12]}"
    assert _run("create", "--name", name, "--scope", "read").exit_code == 0
    result = _run("list")
    assert result.exit_code == 0, result.output
    line = next(row for row in result.stdout.splitlines() if name in row)
    key_id = line.strip("│ ").split("│")[0].strip()
    assert key_id.startswith("key_") and "…" not in line
    assert _run("revoke", key_id).exit_code == 0


def test_list_json_has_every_key_with_its_id(cli_env: None) -> None:
    name, key, _ = _create("meter")
    result = _run("list", "--json")
    assert result.exit_code == 0, result.output
    (entry,) = [k for k in json.loads(result.stdout)["data"] if k["name"] == name]
    assert entry["prefix"] == key[:PREFIX_LEN] and entry["scope"] == "meter"
    assert entry["created_at"].endswith("Z") and entry["revoked_at"] is None
    assert key not in result.stdout
    assert _run("revoke", entry["id"]).exit_code == 0
    (again,) = [k for k in json.loads(_run("list", "--json").stdout)["data"] if k["name"] == name]
    assert again["revoked_at"].endswith("Z")
