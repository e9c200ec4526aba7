"""`creditmeter accounts set|show`: an account's status, overdraft limit, email, metadata,
own rate limits and low-balance thresholds.

`set` checks the fields as PATCH /v1/accounts/{id} does, saves them in SQL with their audit
row (actor "cli"), then puts status, overdraft limit, rate limits and thresholds in force on
every wallet Redis has (sync.accounts.put_in_force), so the account's next charge sees them.
It never creates an account.
"""

from __future__ import annotations

import json
import typing

import typer
from rich.markup import escape

from cli.database import schema_checked_url
from cli.tables import JsonFlag, console, print_json
from meter.times import rfc3339
from sync.accounts import AccountSettings
from sync.settings import get_settings

accounts_app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Account settings: status, overdraft, rate limits.",
)

AUDIT_ACTOR = "cli"
RateLimitOption = typing.Annotated[
    list[str] | None,
    typer.Option(
        "--rate-limit",
        metavar="TOOL=N/unit",
        help="TOOL=600/minute: the account's own limit, beating the catalog's ('*' every "
        "tool, 0/minute blocks, TOOL= gives the catalog's back); repeatable",
    ),
]
LowBalance = typing.Annotated[
    list[str] | None,
    typer.Option(
        "--low-balance",
        metavar="CREDIT_TYPE=N",
        help="balance.low fires when available drops below N; CREDIT_TYPE= removes it (repeatable)",
    ),
]


def _fail(exc: Exception) -> typing.NoReturn:
    from cli.main import _fail as fail  # here, not at the top: cli.main imports this module

    fail(exc)
    raise SystemExit(1)  # fail exits; this line only tells type checkers so


def _json(a: AccountSettings, low: dict[str, int]) -> dict[str, object]:
    """The shape of GET /v1/accounts/{id}."""
    return {
        "id": a.id,
        "status": a.status,
        "overdraft_limit": a.overdraft_limit,
        "email": a.email,
        "metadata": a.metadata,
        "created_at": rfc3339(a.created_at_ms),
        "rate_limits": a.rate_limits,
        "low_balance_thresholds": low,
    }


def _show(a: AccountSettings, low: dict[str, int], as_json: bool) -> None:
    if as_json:
        print_json(_json(a, low))
        return
    meta = json.dumps(a.metadata, sort_keys=True) if a.metadata else "none"
    rates = ", ".join(f"{t}={v}" for t, v in sorted(a.rate_limits.items())) or "the catalog's"
    alerts = ", ".join(f"{ct} below {n}" for ct, n in low.items()) or "none"
    console().print(
        escape(
            f"account {a.id}: {a.status}, overdraft limit {a.overdraft_limit}, "
            f"email {a.email or 'none'}, metadata {meta}, rate limits {rates}, "
            f"low-balance alerts {alerts}"
        )
    )


def _rate_limits(given: list[str]) -> dict[str, str | None]:
    """["TOOL=600/minute", "*=10/second", "TOOL="] -> the PATCH's rate_limits ("": removed)."""
    out: dict[str, str | None] = {}
    for item in given:
        tool, sep, text = item.partition("=")
        if not sep:
            raise typer.BadParameter("must be TOOL=N/unit", param_hint="--rate-limit")
        out[tool] = text or None
    return out


def _thresholds(items: list[str]) -> dict[str, int | None]:
    """--low-balance CREDIT_TYPE=N items; CREDIT_TYPE= (nothing after =) removes one."""
    out: dict[str, int | None] = {}
    for item in items:
        credit_type, sep, value = item.partition("=")
        try:
            out[credit_type] = int(value) if value else None
        except ValueError:
            sep = ""
        if not sep:
            raise typer.BadParameter(
                f"{item!r}: must be CREDIT_TYPE=N (a whole number) or CREDIT_TYPE=",
                param_hint="--low-balance",
            )
    return out


def _given(
    status: str | None,
    overdraft_limit: int | None,
    email: str | None,
    metadata: str | None,
    rate_limit: list[str] | None,
    low_balance: list[str],
) -> dict[str, typing.Any]:
    """The options given, checked as the PATCH body is ("" clears email or metadata)."""
    from pydantic import ValidationError

    from api.schemas import AccountPatchIn

    fields: dict[str, typing.Any] = {}
    if status is not None:
        fields["status"] = status
    if overdraft_limit is not None:
        fields["overdraft_limit"] = overdraft_limit
    if email is not None:
        fields["email"] = email or None
    if metadata is not None:
        try:
            fields["metadata"] = json.loads(metadata) if metadata else None
        except ValueError as exc:
            raise typer.BadParameter(
                "must be a JSON object, or ''", param_hint="--metadata"
            ) from exc
    if rate_limit:
        fields["rate_limits"] = _rate_limits(rate_limit)
    if low_balance:
        fields["low_balance_thresholds"] = _thresholds(low_balance)
    if not fields:
        raise typer.BadParameter(
            "give at least one of --status, --overdraft-limit, --email, --metadata, "
            "--rate-limit, --low-balance"
        )
    try:
        return AccountPatchIn.model_validate(fields).model_dump(exclude_unset=True)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0])
        options = {"rate_limits": "--rate-limit", "low_balance_thresholds": "--low-balance"}
        name = options.get(field, "--" + field.replace("_", "-"))
        raise typer.BadParameter(err["msg"], param_hint=name) from exc


@accounts_app.command("set")
def set_(
    account_id: str = typer.Argument(..., help="an account that exists (never created here)"),
    status: str | None = typer.Option(None, "--status", help="active | suspended"),
    overdraft_limit: int | None = typer.Option(
        None, "--overdraft-limit", help="credits the balance may go below zero"
    ),
    email: str | None = typer.Option(None, "--email", help="'' clears it"),
    metadata: str | None = typer.Option(None, "--metadata", help="a JSON object; '' clears it"),
    rate_limit: RateLimitOption = None,
    low_balance: LowBalance = None,
    as_json: JsonFlag = False,
) -> None:
    """Change an account's settings; a suspended account's charges and holds are refused."""
    from meter import validate
    from sync import accounts, thresholds
    from sync.context import context

    fields = _given(status, overdraft_limit, email, metadata, rate_limit, low_balance or [])
    low = fields.pop("low_balance_thresholds", None)
    try:
        validate.account_id(account_id)
        settings = get_settings()
        schema_checked_url(settings)
        ctx = context(settings)
        saved = accounts.update_settings(ctx.engine, AUDIT_ACTOR, account_id, fields)
        if saved is None:
            raise LookupError(f"no account {account_id!r}: accounts are made by their first use")
        if low:
            thresholds.save_thresholds(ctx.engine, AUDIT_ACTOR, account_id, "low", low)
        meter = ctx.meter()
        if low:
            thresholds.apply_thresholds(
                ctx.engine,
                account_id,
                "low",
                list(low),
                lambda ct, t: meter.set_threshold(account_id, ct, "low", t),
            )
        saved = accounts.put_in_force(
            ctx.engine, saved, lambda s: meter.set_account(s.id, **s.in_redis)
        )
        shown = thresholds.get_thresholds(ctx.engine, account_id, "low")
    except Exception as exc:
        _fail(exc)
    _show(saved, shown, as_json)


@accounts_app.command("show")
def show(account_id: str = typer.Argument(...), as_json: JsonFlag = False) -> None:
    """An account's settings as SQL holds them."""
    from sync import accounts, thresholds
    from sync.db import engine_for

    try:
        engine = engine_for(schema_checked_url(get_settings()))
        found = accounts.get_settings(engine, account_id)
        if found is None:
            raise LookupError(f"no account {account_id!r}")
        low = thresholds.get_thresholds(engine, account_id, "low")
    except Exception as exc:
        _fail(exc)
    _show(found, low, as_json)
