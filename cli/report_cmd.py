"""`creditmeter report usage|revenue|liability`: the admin reports as tables (or CSV).

The same queries as GET /v1/reports/* (sync/reports.py), read straight from SQL: no API
server needed. --json prints the API's JSON answer. A bad range or grouping, or --csv with
--json, prints one line and exits 2.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated

import typer
from rich.markup import escape
from sqlalchemy import Engine

from cli.database import schema_checked_url
from cli.tables import JsonFlag, console, print_json, print_table, table
from cli.usage import usage_error
from sync.settings import get_settings

report_app = typer.Typer(no_args_is_help=True, add_completion=False, help="Admin reports.")

From = Annotated[
    str | None,
    typer.Option("--from", help="start, inclusive: 2026-11-01 or RFC 3339 (default: to - 30 d)"),
]
To = Annotated[
    str | None, typer.Option("--to", help="end, exclusive: a UTC date or RFC 3339 (default: now)")
]
Csv = Annotated[bool, typer.Option("--csv", help="print CSV instead of a table")]


def _group_by_help(allowed: tuple[str, ...], default: str) -> str:
    return f"comma-separated, of {', '.join(allowed)} (default {default})"


def _cell(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "" if value is None else escape(str(value))


def _show(
    name: str,
    from_: str | None,
    to: str | None,
    group_by: str | None,
    allowed: tuple[str, ...],
    default: tuple[str, ...],
    csv: bool,
    as_json: bool,
    query: Callable[..., object],
) -> None:
    from cli.main import _fail
    from meter.times import now_ms
    from sync import reports
    from sync.context import context

    if csv and as_json:
        usage_error("--json", "give --csv or --json, not both")
    try:
        rng = reports.parse_range(from_, to, now_ms())
        groups = reports.parse_group_by(group_by, allowed, default)
    except reports.ReportError as exc:
        usage_error("--" + exc.field.replace("_", "-"), str(exc))
    try:
        settings = get_settings()
        schema_checked_url(settings)
        report = query(context(settings).engine, rng, groups)
    except Exception as exc:
        _fail(exc)
    assert isinstance(report, reports.Report)
    if csv:
        sys.stdout.write(report.to_csv())
        return
    from meter.times import rfc3339

    if as_json:  # the shape of GET /v1/reports/<name>
        document = {
            "report": report.name,
            "from": rfc3339(rng.from_ms),
            "to": rfc3339(rng.to_ms),
            "group_by": list(groups),
            "columns": list(report.columns),
            "data": report.as_dicts(),
        }
        print_json(document)
        return
    if report.name == "liability":  # owed now: the range does not apply
        title = f"liability at {rfc3339(now_ms())}"
    else:
        title = f"{name}  {rfc3339(rng.from_ms)} .. {rfc3339(rng.to_ms)} (to exclusive)"
    numeric = [
        column
        for i, column in enumerate(report.columns)
        if any(isinstance(r[i], int) for r in report.rows)
    ]
    rows = table(*report.columns, right_aligned=numeric)
    for row in report.rows:
        rows.add_row(*(_cell(v) for v in row))
    out = console()
    out.print(title, soft_wrap=True)  # not the table's title: rich wraps that to its width
    print_table(rows, out)
    out.print(f"{len(report.rows)} row{'' if len(report.rows) == 1 else 's'}")


@report_app.command("usage")
def usage(
    from_: From = None,
    to: To = None,
    group_by: Annotated[
        str | None,
        typer.Option(
            "--group-by", help=_group_by_help(("day", "tool", "account", "credit_type"), "day,tool")
        ),
    ] = None,
    csv: Csv = False,
    as_json: JsonFlag = False,
) -> None:
    """Charges, refunds and credits consumed (charges minus refunds) per group."""
    from sync import reports

    _show(
        "usage",
        from_,
        to,
        group_by,
        reports.USAGE_GROUPS,
        ("day", "tool"),
        csv,
        as_json,
        reports.usage,
    )


@report_app.command("revenue")
def revenue(
    from_: From = None,
    to: To = None,
    group_by: Annotated[
        str | None,
        typer.Option("--group-by", help=_group_by_help(("day", "pack", "plan"), "day")),
    ] = None,
    csv: Csv = False,
    as_json: JsonFlag = False,
) -> None:
    """Paid purchases per group and currency, in minor units: gross, refunded, net."""
    from sync import reports

    _show(
        "revenue",
        from_,
        to,
        group_by,
        reports.REVENUE_GROUPS,
        ("day",),
        csv,
        as_json,
        reports.revenue,
    )


@report_app.command("liability")
def liability(
    from_: From = None,
    to: To = None,
    group_by: Annotated[
        str | None,
        typer.Option(
            "--group-by",
            help="credit_type (default: owed now, paid/promotional, expiring 7/30 d, debt, "
            "held) or day (balance outstanding at the end of each day of the range)",
        ),
    ] = None,
    csv: Csv = False,
    as_json: JsonFlag = False,
) -> None:
    """Credits owed to users: now per credit type, or day by day over the range."""
    from meter.times import now_ms
    from sync import reports

    def query(engine: Engine, rng: reports.Range, groups: tuple[str, ...]) -> reports.Report:
        if "day" in groups:
            return reports.liability_series(engine, rng)
        return reports.liability(engine, now_ms())

    _show(
        "liability",
        from_,
        to,
        group_by,
        reports.LIABILITY_GROUPS,
        ("credit_type",),
        csv,
        as_json,
        query,
    )
