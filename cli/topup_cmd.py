"""`creditmeter topup set|show|disable`: auto top-up rules (issue 16 item 4), as the
admin routes /v1/accounts/{id}/topup/{credit_type} manage them, over SQL. The audit log
names the actor "cli"."""

from __future__ import annotations

import typing

import typer
from rich.markup import escape
from sqlalchemy import Engine

from cli.database import schema_checked_url
from cli.tables import JsonFlag, console, print_json, print_table, table
from cli.usage import usage_error
from sync.settings import get_settings

if typing.TYPE_CHECKING:
    from sync.topup_store import Rule

topup_app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="Set, show and disable auto top-ups."
)
ACTOR = "cli"


def _fail(exc: Exception) -> typing.NoReturn:
    from cli.main import _fail as fail  # here, not at the top: cli.main imports this module

    fail(exc)
    raise SystemExit(1)  # fail exits; this line only tells type checkers so


def _engine() -> Engine:
    from sync.db import engine_for

    return engine_for(schema_checked_url(get_settings()))


def _show(engine: Engine, rule: Rule, as_json: bool) -> None:
    from sync.topup_attempts import last_attempts
    from sync.topup_store import saved_card

    attempts = last_attempts(engine, rule.account_id, rule.credit_type)
    card = saved_card(engine, rule.account_id) is not None
    if as_json:
        doc = rule.as_dict() | {"card_saved": card, "attempts": [a.as_dict() for a in attempts]}
        print_json(doc)
        return
    state = "enabled" if rule.enabled else f"disabled ({rule.disabled_reason})"
    out = console()
    out.print(
        f"{escape(rule.account_id)} {rule.credit_type}: below {rule.threshold} buy"
        f" {rule.credits}, at most {rule.daily_max} a day; {escape(state)};"
        f" failures in a row: {rule.consecutive_failures};"
        f" card {'saved' if card else 'not saved yet (the next checkout saves it)'}"
    )
    if not attempts:
        out.print("no attempts yet")
        return
    rows = table(
        "attempt",
        "status",
        "credits",
        "amount",
        "error",
        "created",
        right_aligned=("credits", "amount"),
    )
    for a in attempts:
        amount = "" if a.amount_minor is None else f"{a.amount_minor} {a.currency}"
        rows.add_row(
            a.id,
            a.status,
            "" if a.credits is None else str(a.credits),
            amount,
            escape(a.error_code or ""),
            a.as_dict()["created_at"],
        )
    print_table(rows)


@topup_app.command("set")
def set_(
    account_id: str = typer.Argument(..., help="the account"),
    credit_type: str = typer.Argument(..., help="the wallet's credit type"),
    below: int = typer.Option(..., "--below", help="top up when available drops below this"),
    buy: int = typer.Option(..., "--buy", help="credits bought per top-up"),
    daily_max: int = typer.Option(1, "--daily-max", help="top-ups at most in any 24 h"),
    as_json: JsonFlag = False,
) -> None:
    """Set (and enable) the rule and the wallet's top-up threshold; the account's next
    checkout saves its card."""
    from meter.times import now_ms
    from sync import accounts, pricing, thresholds, topup_store
    from sync.context import context

    try:
        topup_store.check_rule(below, buy, daily_max)
    except topup_store.TopupError as exc:
        option = {"threshold": "--below", "credits": "--buy"}.get(exc.field, "--daily-max")
        usage_error(option, str(exc))
    try:
        engine = _engine()
        ctx = context(get_settings())
        if not accounts.account_exists(engine, account_id):
            usage_error("ACCOUNT_ID", f"no account {account_id!r}")
        try:
            pricing.chargeable(pricing.quote(engine, credit_type, buy, account_id=account_id))
        except pricing.PricingError as exc:
            usage_error("CREDIT_TYPE" if exc.field == "credit_type" else "--buy", str(exc))
        rule = topup_store.set_rule(
            engine,
            ACTOR,
            account_id,
            credit_type,
            threshold=below,
            credits=buy,
            daily_max=daily_max,
            now_ms=now_ms(),
        )
        thresholds.set_threshold(
            engine, ctx.meter(), ACTOR, account_id, credit_type, "topup", rule.threshold
        )
        _show(engine, rule, as_json)
    except SystemExit:
        raise
    except Exception as exc:
        _fail(exc)


@topup_app.command()
def show(
    account_id: str = typer.Argument(..., help="the account"),
    credit_type: str = typer.Argument(..., help="the wallet's credit type"),
    as_json: JsonFlag = False,
) -> None:
    """The rule and its last attempts, newest first."""
    from sync.topup_store import get_rule

    try:
        engine = _engine()
        rule = get_rule(engine, account_id, credit_type)
        if rule is None:
            usage_error("ACCOUNT_ID CREDIT_TYPE", "no auto top-up rule")
        _show(engine, rule, as_json)
    except SystemExit:
        raise
    except Exception as exc:
        _fail(exc)


@topup_app.command()
def disable(
    account_id: str = typer.Argument(..., help="the account"),
    credit_type: str = typer.Argument(..., help="the wallet's credit type"),
) -> None:
    """Disable the rule (kept with its attempts; `set` enables it again) and remove the
    wallet's top-up threshold."""
    from meter.times import now_ms
    from sync import thresholds
    from sync.context import context
    from sync.topup_store import disable_rule

    try:
        engine = _engine()
        rule = disable_rule(
            engine, ACTOR, account_id, credit_type, "disabled from the CLI", now_ms()
        )
        if rule is not None:
            meter = context(get_settings()).meter()
            thresholds.set_threshold(engine, meter, ACTOR, account_id, credit_type, "topup", None)
    except Exception as exc:
        _fail(exc)
    if rule is None:
        usage_error("ACCOUNT_ID CREDIT_TYPE", "no auto top-up rule")
    console().print(f"disabled auto top-up of {escape(account_id)} {credit_type}")
