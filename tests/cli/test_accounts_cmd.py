"""`creditmeter accounts set|show` over real SQL and Redis: the settings land in SQL with an
audit row, the account's wallets in Redis refuse charges at once, and an unknown account is
an error, never created."""

from __future__ import annotations

import json
import uuid

import pytest
import redis
from sqlalchemy import Engine, select
from typer.testing import CliRunner, Result

from cli.main import app
from meter import AccountSuspended, InsufficientCredits, Meter, RateLimited
from meter.keys import Keys
from sync.accounts import get_settings
from sync.loader import SqlLoader
from sync.models import T_AUDIT
from tests.meter.helpers import journal_entries


def _run(cli: CliRunner, *args: str) -> Result:
    return cli.invoke(app, ["accounts", *args])


@pytest.fixture
def meter(client: redis.Redis, keys: Keys, engine: Engine) -> Meter:
    meter = Meter(client, keys=keys, loader=SqlLoader(engine, keys))
    meter.set_tool("CLI_TOOL", 10)
    return meter


def _funded(meter: Meter, amount: int) -> str:
    account = f"acct-{uuid.uuid4().hex[:8]}"
    meter.grant(account, "credits", amount, category="paid")
    return account


def test_set_suspends_at_once_and_reactivates(cli: CliRunner, meter: Meter, engine: Engine) -> None:
    account = _funded(meter, 100)
    r = _run(cli, "set", account, "--status", "suspended", "--email", "a@example.com")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == (
        f"account {account}: suspended, overdraft limit 0, email a@example.com, metadata none, "
        "rate limits the catalog's, low-balance alerts none"
    )
    with pytest.raises(AccountSuspended):
        meter.charge(account, "CLI_TOOL")
    assert _run(cli, "set", account, "--status", "active").exit_code == 0
    assert meter.charge(account, "CLI_TOOL").balance == 90
    with engine.connect() as conn:
        rows = conn.execute(
            select(T_AUDIT.c.actor, T_AUDIT.c.detail).where(T_AUDIT.c.target == account)
        ).all()
    assert [(a, json.loads(d)) for a, d in rows] == [
        ("cli", {"status": "suspended", "email": "a@example.com"}),
        ("cli", {"status": "active"}),
    ]


def test_set_overdraft_json_prints_the_api_shape(
    cli: CliRunner, meter: Meter, engine: Engine
) -> None:
    account = _funded(meter, 10)
    r = _run(cli, "set", account, "--overdraft-limit", "10", "--metadata", '{"a": 1}', "--json")
    assert r.exit_code == 0, r.output
    shown = json.loads(r.stdout)
    assert {k: shown[k] for k in ("id", "status", "overdraft_limit", "email", "metadata")} == {
        "id": account,
        "status": "active",
        "overdraft_limit": 10,
        "email": None,
        "metadata": {"a": 1},
    }
    assert meter.charge(account, "CLI_TOOL").balance == 0
    assert meter.charge(account, "CLI_TOOL").balance == -10
    with pytest.raises(InsufficientCredits):
        meter.charge(account, "CLI_TOOL")
    assert json.loads(_run(cli, "show", account, "--json").stdout) == shown


def test_unknown_account_is_an_error_and_is_not_created(cli: CliRunner, engine: Engine) -> None:
    account = f"never-{uuid.uuid4().hex[:8]}"
    r = _run(cli, "set", account, "--status", "suspended")
    assert r.exit_code == 1 and r.stderr.startswith("error: ") and "no account" in r.stderr
    assert get_settings(engine, account) is None


@pytest.mark.parametrize(
    "args",
    [
        ["--status", "closed"],
        ["--overdraft-limit", "-1"],
        ["--email", "nope"],
        ["--metadata", "[1]"],
        ["--metadata", "{bad"],
        ["--low-balance", "credits"],
        ["--low-balance", "credits=ten"],
        ["--low-balance", "credits=0"],
        ["--low-balance", "Credits=5"],
        [],
    ],
)
def test_bad_options_exit_2_and_change_nothing(
    cli: CliRunner, meter: Meter, engine: Engine, args: list[str]
) -> None:
    account = _funded(meter, 10)
    r = _run(cli, "set", account, *args)
    assert r.exit_code == 2, r.output
    now = get_settings(engine, account)
    assert now is not None and now.status == "active"


def test_set_rate_limit_beats_the_catalog_at_once_and_tool_equals_nothing_removes_it(
    cli: CliRunner, meter: Meter, engine: Engine
) -> None:
    account = _funded(meter, 100)
    r = _run(cli, "set", account, "--rate-limit", "CLI_TOOL=1/hour", "--rate-limit", "*=5/second")
    assert r.exit_code == 0, r.output
    assert "rate limits *=5/second, CLI_TOOL=1/hour," in r.stdout
    meter.charge(account, "CLI_TOOL")
    with pytest.raises(RateLimited) as refused:
        meter.charge(account, "CLI_TOOL")
    assert refused.value.limit == 1
    assert _run(cli, "set", account, "--rate-limit", "CLI_TOOL=").exit_code == 0
    saved = get_settings(engine, account)
    assert saved is not None and saved.rate_limits == {"*": "5/second"}
    with pytest.raises(RateLimited) as now_all:  # the 1/hour call counts one second of 5/second
        meter.charge(account, "CLI_TOOL")
    assert now_all.value.limit == 5 and now_all.value.retry_after_ms <= 200


@pytest.mark.parametrize("given", ["CLI_TOOL=5/day", "cli_tool=1/hour", "CLI_TOOL"])
def test_set_a_bad_rate_limit_is_a_usage_error_that_changes_nothing(
    cli: CliRunner, meter: Meter, engine: Engine, given: str
) -> None:
    account = _funded(meter, 10)
    r = _run(cli, "set", account, "--rate-limit", given)
    assert r.exit_code == 2 and "--rate-limit" in r.output, r.output
    saved = get_settings(engine, account)
    assert saved is not None and saved.rate_limits == {}


def test_set_low_balance_saves_audits_and_flags_the_next_crossing(
    cli: CliRunner, meter: Meter, engine: Engine
) -> None:
    from meter.wire import JournalField

    account = _funded(meter, 100)
    r = _run(cli, "set", account, "--low-balance", "credits=50", "--low-balance", "gems=7")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip().endswith("low-balance alerts credits below 50, gems below 7")
    c = meter.charge(account, "CLI_TOOL", 6)  # 100 -> 40
    journal = meter.keys.journal(meter.keys.bucket(account))
    (flags,) = [
        f[JournalField.ALERTS.encode()]
        for _, f in journal_entries(meter.redis, journal)
        if f[JournalField.ID.encode()] == c.id.encode()
    ]
    assert flags == b"l|40|50"
    assert _run(cli, "set", account, "--low-balance", "gems=").exit_code == 0
    shown = json.loads(_run(cli, "show", account, "--json").stdout)
    assert shown["low_balance_thresholds"] == {"credits": 50}
    with engine.connect() as conn:
        actions = conn.scalars(
            select(T_AUDIT.c.action).where(T_AUDIT.c.target == account, T_AUDIT.c.actor == "cli")
        ).all()
    assert actions == ["account.threshold"] * 3
