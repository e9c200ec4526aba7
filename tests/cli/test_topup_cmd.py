"""`creditmeter topup set|show|disable` on real SQL: the rule an admin would set over HTTP,
its last attempts, and usage errors (exit 2) for what the API answers 422."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import Engine, select
from typer.testing import CliRunner, Result

from cli.main import app
from meter.times import now_ms
from sync import thresholds, topup_attempts, topup_store
from sync.db import write_transaction
from sync.models import T_ACCOUNTS, T_AUDIT
from sync.pricing import PriceTable, Slab, replace_prices
from tests.sync.conftest import account


def _run(cli: CliRunner, *args: str) -> Result:
    return cli.invoke(app, ["topup", *args])


@pytest.fixture
def wallet(engine: Engine) -> tuple[str, str]:
    acct, ct = account("cli-topup"), f"tu_{uuid.uuid4().hex[:10]}"
    replace_prices(engine, [PriceTable(ct, "usd", "graduated", 10, (Slab(1, None, 10),))])
    write_transaction(
        engine,
        lambda conn: conn.execute(
            T_ACCOUNTS.insert(), {"id": acct, "overdraft_limit": 0, "created_at_ms": now_ms()}
        ),
    )
    return acct, ct


def test_set_show_disable(cli: CliRunner, engine: Engine, wallet: tuple[str, str]) -> None:
    acct, ct = wallet
    done = _run(cli, "set", acct, ct, "--below", "50", "--buy", "100", "--daily-max", "2")
    assert done.exit_code == 0, done.output
    assert "below 50 buy 100, at most 2 a day; enabled" in done.output
    assert "card not saved yet" in done.output and "no attempts yet" in done.output
    assert thresholds.get_thresholds(engine, acct, "topup") == {ct: 50}
    topup_attempts.claim(engine, acct, ct, "x-1", now_ms())
    shown = _run(cli, "show", acct, ct, "--json")
    assert shown.exit_code == 0, shown.output
    doc = json.loads(shown.output)
    assert (doc["threshold"], doc["credits"], doc["enabled"]) == (50, 100, True)
    assert [a["status"] for a in doc["attempts"]] == ["pending"]
    table = _run(cli, "show", acct, ct)
    assert topup_attempts.attempt_id(acct, ct, "x-1") in table.output
    off = _run(cli, "disable", acct, ct)
    assert off.exit_code == 0 and f"disabled auto top-up of {acct} {ct}" in off.output
    assert thresholds.get_thresholds(engine, acct, "topup") == {}
    rule = topup_store.get_rule(engine, acct, ct)
    assert rule is not None and (rule.enabled, rule.disabled_reason) == (
        False,
        "disabled from the CLI",
    )
    with engine.connect() as conn:
        actors = conn.execute(
            select(T_AUDIT.c.actor, T_AUDIT.c.action)
            .where(T_AUDIT.c.target == f"{acct}/{ct}")
            .order_by(T_AUDIT.c.id)
        ).all()
    assert [tuple(a) for a in actors] == [("cli", "topup.set"), ("cli", "topup.disable")]
    with engine.connect() as conn:
        kinds = conn.execute(
            select(T_AUDIT.c.detail)
            .where(T_AUDIT.c.target == acct, T_AUDIT.c.action == "account.threshold")
            .order_by(T_AUDIT.c.id)
        ).scalars()
        assert [json.loads(d)["threshold"] for d in kinds] == [50, None]


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--below", "0", "--buy", "100"], "--below"),
        (["--below", "5", "--buy", "0"], "--buy"),
        (["--below", "5", "--buy", "100", "--daily-max", "25"], "--daily-max"),
        (["--below", "5", "--buy", "5"], "--buy"),  # under the minimum purchase of 10
    ],
)
def test_bad_rules_are_usage_errors(
    cli: CliRunner, wallet: tuple[str, str], args: list[str], option: str
) -> None:
    acct, ct = wallet
    r = _run(cli, "set", acct, ct, *args)
    assert r.exit_code == 2, r.output
    assert f"error: {option}:" in r.output


def test_unknown_account_rule_and_credit_type(cli: CliRunner, wallet: tuple[str, str]) -> None:
    acct, ct = wallet
    assert _run(cli, "set", "nobody-x", ct, "--below", "5", "--buy", "100").exit_code == 2
    unsold = _run(cli, "set", acct, "never_sold", "--below", "5", "--buy", "100")
    assert unsold.exit_code == 2 and "CREDIT_TYPE" in unsold.output
    assert _run(cli, "show", acct, ct).exit_code == 2
    assert _run(cli, "disable", acct, ct).exit_code == 2
