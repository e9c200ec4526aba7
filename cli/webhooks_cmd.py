"""`creditmeter webhooks list|deliveries|resend`: outgoing webhook endpoints and deliveries.

All three need SQL only. `resend DELIVERY_ID` sends the delivery again now, from this
process, with the same webhook-id (whatever its state: failed, succeeded or pending), prints
what the receiver answered and exits 1 unless it was a 2xx. Endpoints are registered over
HTTP (POST /v1/webhook-endpoints), which hands out the signing secret once.
"""

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
    from sync.webhooks_deliveries import Delivery

webhooks_app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="List and resend outgoing webhooks."
)


def _fail(exc: Exception) -> typing.NoReturn:
    from cli.main import _fail as fail  # here, not at the top: cli.main imports this module

    fail(exc)
    raise SystemExit(1)  # fail exits; this line only tells type checkers so


def _engine() -> Engine:
    from sync.db import engine_for

    return engine_for(schema_checked_url(get_settings()))


@webhooks_app.command("list")
def list_(as_json: JsonFlag = False) -> None:
    """The active endpoints (never their secrets)."""
    from sync.webhooks import list_endpoints

    try:
        endpoints = list_endpoints(_engine())
    except Exception as exc:
        _fail(exc)
    if as_json:
        print_json({"data": [e.as_dict() for e in endpoints]})
        return
    if not endpoints:
        console().print("no webhook endpoints yet: POST /v1/webhook-endpoints with an admin key")
        return
    rows = table("id", "url", "events", "created")
    for e in endpoints:
        j = e.as_dict()
        rows.add_row(e.id, escape(e.url), ", ".join(e.events), j["created_at"])
    print_table(rows)


@webhooks_app.command()
def deliveries(
    endpoint: str | None = typer.Option(None, "--endpoint", help="only this endpoint's"),
    status: str | None = typer.Option(None, "--status", help="pending, succeeded or failed"),
    limit: int = typer.Option(100, "--limit", min=1, max=500, help="newest first, at most"),
    as_json: JsonFlag = False,
) -> None:
    """Deliveries, newest first: status, attempts, the receiver's last answer."""
    from sync.webhooks import STATUSES
    from sync.webhooks_deliveries import list_deliveries

    if status is not None and status not in STATUSES:
        usage_error("--status", f"is {status!r}; give one of {', '.join(STATUSES)}")
    try:
        found = list_deliveries(_engine(), endpoint_id=endpoint, status=status, limit=limit)
    except Exception as exc:
        _fail(exc)
    if as_json:
        print_json({"data": [d.as_dict() for d in found]})
        return
    if not found:
        console().print("no webhook deliveries" + (f" {status}" if status else ""))
        return
    rows = table(
        "id",
        "event",
        "account",
        "url",
        "status",
        "attempts",
        "code",
        "last error",
        "created",
        right_aligned=("attempts", "code"),
    )
    for d in found:
        rows.add_row(*_cells(d))
    print_table(rows)


def _cells(d: Delivery) -> list[str]:
    j = d.as_dict()
    code = "-" if d.last_response_code is None else str(d.last_response_code)
    return [
        d.id,
        d.event_type,
        escape(d.account_id or "-"),
        escape(d.url),
        d.status,
        str(d.attempts),
        code,
        escape(d.last_error or ""),
        j["created_at"],
    ]


@webhooks_app.command()
def resend(
    delivery_id: str = typer.Argument(..., metavar="DELIVERY_ID", help="from `deliveries`"),
) -> None:
    """Send one delivery again now, signed afresh with the same webhook-id."""
    from meter.times import now_ms
    from sync.webhooks import WebhookError
    from sync.webhooks_send import deliver, make_due

    try:
        engine = _engine()
        make_due(engine, delivery_id, now_ms())
        done = deliver(engine, delivery_id, now_ms())
    except WebhookError as exc:
        usage_error("DELIVERY_ID", str(exc))
    except Exception as exc:
        _fail(exc)
    if done is None:
        _fail(RuntimeError(f"delivery {delivery_id} is being sent by the worker right now"))
    code = "no answer" if done.last_response_code is None else f"HTTP {done.last_response_code}"
    out = console()
    line = f"{done.id} to {escape(done.url)}: {code}, attempt {done.attempts}, {done.status}"
    out.print(line, soft_wrap=True)  # one line whatever the terminal's width, for grep
    if done.status != "succeeded":
        out.print(f"last error: {escape(done.last_error or '')}", soft_wrap=True)
        raise SystemExit(1)
