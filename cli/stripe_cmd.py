"""`creditmeter stripe replay EVENT_ID` and `creditmeter stripe sync --since T`.

replay applies one stored event again, now, in this process (what the worker's job does):
for an event whose job failed all its retries. Applying is idempotent, so a replay of an
applied event changes nothing. sync lists the events Stripe created since T (Stripe keeps
30 days) and applies those never received, e.g. after the webhook was down or misconfigured.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from cli.database import refuse_missing_sqlite
from sync.settings import get_settings

stripe_app = typer.Typer(no_args_is_help=True, add_completion=False, help="Stripe events.")


@stripe_app.command("replay")
def replay(event_id: Annotated[str, typer.Argument(help="a stored event id, evt_...")]) -> None:
    """Apply one stored event again; prints what it did."""
    from cli.main import _fail  # here, not at the top: cli.main imports this module
    from sync.context import context
    from worker.stripe_jobs import apply_stored_event

    try:
        refuse_missing_sqlite(get_settings())
        outcome = apply_stored_event(context(get_settings()), event_id)
    except Exception as exc:
        _fail(exc)
        return
    Console(highlight=False).print(f"{escape(event_id)}: {escape(outcome)}", soft_wrap=True)


@stripe_app.command("sync")
def sync(
    since: Annotated[
        str, typer.Option("--since", help="RFC 3339 time or date, e.g. 2026-11-20T00:00:00Z")
    ],
) -> None:
    """Apply the events Stripe sent since T that never reached the webhook."""
    from cli.main import _fail
    from sync.context import context
    from sync.purchases import store_event
    from sync.stripe_api import client_for, events_since
    from worker.stripe_jobs import apply_stored_event

    out = Console(highlight=False)
    try:
        since_s = _parse_since(since)
        refuse_missing_sqlite(get_settings())
        ctx = context(get_settings())
        # Stripe lists newest first; they are applied in the order Stripe created them.
        events = list(events_since(client_for(ctx.settings), since_s))[::-1]
    except Exception as exc:
        _fail(exc)
        return
    applied = failed = 0
    for event in events:
        try:
            if not store_event(ctx.engine, event, json.dumps(event)):
                continue  # the webhook received it
            outcome = apply_stored_event(ctx, event["id"])
            applied += 1
        except Exception as exc:  # one event that cannot be applied does not stop the others
            failed += 1
            outcome = f"failed: {type(exc).__name__}: {exc}"
        out.print(
            f"{escape(event['id'])} {escape(event['type'])}: {escape(outcome)}", soft_wrap=True
        )
    out.print(
        f"{len(events)} events from Stripe since {since}; {applied} were new and applied"
        + (f"; {failed} failed (see `creditmeter stripe replay`)" if failed else "")
    )
    if failed:
        raise typer.Exit(1)


def _parse_since(text: str) -> int:
    if len(text) == len("2026-11-20"):  # a date: its midnight UTC
        text += "T00:00:00Z"
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"--since {text!r}: not an RFC 3339 time or date") from exc
    if dt.tzinfo is None:
        raise ValueError(f"--since {text!r}: give a UTC offset, e.g. 2026-11-20T00:00:00Z")
    return int(dt.timestamp())
