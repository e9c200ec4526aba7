"""`creditmeter deadletters list|retry`: journal entries SQL refused for their own data.

Both need SQL only (not Redis): a dead letter is a copy of the journal entry, kept in SQL.
`retry` exits 1 when any dead letter is still refused, so a script sees it.
"""

from __future__ import annotations

import sys
import typing
from datetime import UTC, datetime

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy import Engine

from cli.database import schema_checked_url
from meter.keys import Keys
from sync.settings import get_settings

deadletters_app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="List and re-drive dead letters."
)
ERROR_SHOWN_LEN_MAX = 120  # a table cell, not the whole driver message (`list --full` has it)


def _out() -> Console:
    return Console(highlight=False)


def _fail(exc: Exception) -> typing.NoReturn:
    from cli.main import _fail as fail  # here, not at the top: cli.main imports this module

    fail(exc)
    raise SystemExit(1)  # fail exits; this line only tells type checkers so


def _target() -> tuple[Engine, Keys]:
    from meter.connect import keys_from
    from sync.db import engine_for

    settings = get_settings()
    return engine_for(schema_checked_url(settings)), keys_from(settings)


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@deadletters_app.command("list")
def list_cmd(
    full: bool = typer.Option(False, "--full", help="show each error whole"),
) -> None:
    """Every dead letter: journal, stream id, entry, account, amount, error, created."""
    from sync.deadletters import list_dead_letters

    try:
        dead = list_dead_letters(*_target())
    except Exception as exc:
        _fail(exc)
    out = _out()
    if not dead:
        out.print("no dead letters")
        return
    table = Table("id", "journal", "stream id", "entry", "account", "amount", "error", "created")
    for d in dead:
        error = d.error if full else d.error[:ERROR_SHOWN_LEN_MAX]
        table.add_row(
            str(d.id),
            escape(d.journal),
            d.stream_id,
            escape(d.entry_id or "-"),
            escape(f"{d.account_id or '-'}/{d.credit_type or '-'}"),
            "-" if d.amount is None else str(d.amount),
            escape(error),
            _when(d.created_at_ms),
        )
    out.print(table)
    out.print(f"{len(dead)} dead letters")


@deadletters_app.command()
def retry(
    dead_letter_id: typing.Annotated[
        int | None, typer.Argument(help="the id `list` shows (omit with --all)")
    ] = None,
    all_: bool = typer.Option(False, "--all", help="re-drive every dead letter"),
) -> None:
    """Write one dead letter (or --all) to SQL again; a written one is removed."""
    from sync.deadletters import retry_dead_letters

    if (dead_letter_id is None) == (not all_):
        _fail(ValueError("give one dead letter id or --all"))
    try:
        outcomes = retry_dead_letters(*_target(), dead_letter_id)
    except Exception as exc:
        _fail(exc)
    out = _out()
    if not outcomes:
        out.print("no such dead letter" if dead_letter_id is not None else "no dead letters")
        sys.exit(1 if dead_letter_id is not None else 0)
    for o in outcomes:
        d = o.dead_letter
        what = f"dead letter {d.id} (entry {d.entry_id or '-'}, {d.journal} {d.stream_id})"
        if o.ok:
            out.print(f"{escape(what)}: written to SQL, removed")
        else:
            out.print(f"{escape(what)}: still refused: {escape(o.error or '')}")
    sys.exit(0 if all(o.ok for o in outcomes) else 1)
