"""`creditmeter tools set|list` over real SQL and Redis: SQL first, then every bucket's
replica, so the next charge sees the change; errors are one line and exit 1."""

from __future__ import annotations

import json
import uuid

import pytest
import redis
from sqlalchemy import Engine
from typer.testing import CliRunner, Result

from cli.main import app
from meter import Meter, ToolDisabled
from meter.keys import Keys
from sync.loader import SqlLoader
from sync.tools import get_tool


def _run(cli: CliRunner, *args: str) -> Result:
    return cli.invoke(app, ["tools", *args])


def _name() -> str:
    return f"T_{uuid.uuid4().hex[:10].upper()}"


def _replicas(client: redis.Redis, keys: Keys, tool: str) -> set[bytes | None]:
    return {client.hget(keys.catalog(b), tool) for b in keys.all_buckets()}


def _one_line_error(result: Result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


def test_set_creates_a_tool_in_sql_and_every_replica(
    cli: CliRunner, engine: Engine, client: redis.Redis, keys: Keys
) -> None:
    name = _name()
    r = _run(cli, "set", name, "--cost", "3", "--credit-type", "credits", "--display-name", "Thing")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == f"tool {name}: added, 3 credits per unit, active"
    saved = get_tool(engine, name)
    assert saved is not None and (saved.cost, saved.display_name) == (3, "Thing")
    assert _replicas(client, keys, name) == {b"3|credits|1"}
    listed = _run(cli, "list")
    assert listed.exit_code == 0 and name in listed.stdout and "Thing" in listed.stdout


def test_set_changes_only_what_it_is_given_and_applies_to_the_next_charge(
    cli: CliRunner, engine: Engine, client: redis.Redis, keys: Keys
) -> None:
    name = _name()
    _run(cli, "set", name, "--cost", "3", "--credit-type", "credits", "--description", "d")
    meter = Meter(client, keys=keys, loader=SqlLoader(engine, keys))
    account = f"acct-{uuid.uuid4().hex[:8]}"
    meter.grant(account, "credits", 100, category="paid")
    assert meter.charge(account, name).balance == 97

    r = _run(cli, "set", name, "--cost", "5")
    assert r.stdout.strip() == f"tool {name}: cost 3 -> 5"
    assert meter.charge(account, name).balance == 92

    r = _run(cli, "set", name, "--inactive")
    assert r.stdout.strip() == f"tool {name}: active -> inactive"
    saved = get_tool(engine, name)
    assert saved is not None and (saved.cost, saved.description, saved.active) == (5, "d", False)
    with pytest.raises(ToolDisabled):
        meter.charge(account, name)

    again = _run(cli, "set", name, "--inactive")
    assert again.stdout.strip() == f"tool {name}: unchanged, 5 credits per unit, inactive"


def test_set_restores_missing_replicas_with_every_sql_tool(
    cli: CliRunner, client: redis.Redis, keys: Keys
) -> None:
    first, second = _name(), _name()
    _run(cli, "set", first, "--cost", "1", "--credit-type", "credits")
    client.delete(*(keys.catalog(b) for b in keys.all_buckets()))  # Redis lost the replicas
    _run(cli, "set", second, "--cost", "2", "--credit-type", "credits")
    assert _replicas(client, keys, first) == {b"1|credits|1"}
    assert _replicas(client, keys, second) == {b"2|credits|1"}


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--cost", "1"], "is new: give both --cost and --credit-type"),
        (["--cost", "-1", "--credit-type", "credits"], "cost: must be an integer"),
        (["--cost", "1", "--credit-type", "Credits"], "credit_type: must be 1-32 of [a-z0-9_]"),
        (["--cost", "1", "--credit-type", "c", "--display-name", "x" * 256], "display_name"),
    ],
)
def test_set_errors_are_one_line_and_change_nothing(
    cli: CliRunner, engine: Engine, args: list[str], says: str
) -> None:
    name = _name()
    assert says in _one_line_error(_run(cli, "set", name, *args))
    assert get_tool(engine, name) is None


def test_a_bad_tool_name_is_one_line(cli: CliRunner) -> None:
    assert "tool: must be 1-64 of [A-Z0-9_]" in _one_line_error(_run(cli, "set", "image_gen"))


def test_list_piped_at_80_columns_and_as_json_shows_whole_values(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    name = _name()
    description = "One 1024x1024 image from a text prompt, in any style, billed per image"
    args = ("--cost", "7", "--credit-type", "credits", "--description", description)
    assert _run(cli, "set", name, *args).exit_code == 0
    table = _run(cli, "list")
    assert table.exit_code == 0, table.output
    (line,) = [row for row in table.stdout.splitlines() if name in row]
    assert description in line and "…" not in table.stdout
    listed = _run(cli, "list", "--json")
    assert listed.exit_code == 0, listed.output
    (tool,) = [t for t in json.loads(listed.stdout)["data"] if t["name"] == name]
    assert tool == {
        "name": name,
        "display_name": "",
        "description": description,
        "cost": 7,
        "credit_type": "credits",
        "active": True,
    }
