"""Prints a reconcile report as readable tables."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table

from sync.reconcile import ReconcileReport

DIFFERENCES_SHOWN_MAX = 200  # a terminal is not a report; the rest is counted


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def show(report: ReconcileReport, console: Console) -> None:
    console.print(
        f"drained {report.drained_entries} journal entries; compared "
        f"{report.wallets_compared} Redis wallets with SQL "
        f"({report.wallets_not_in_redis} SQL wallets not loaded in Redis: they load on touch)"
    )
    if report.epoch.lost:
        console.print(
            f"[red]Redis lost its dataset[/red] (epoch {report.epoch.previous} is gone; "
            f"new epoch {report.epoch.epoch}). Wallets reload from SQL on their next touch; "
            "changes acknowledged after the last flush are lost."
        )
    elif report.redis_lost:
        console.print(
            f"[yellow]Redis lost its dataset at {_when(report.redis_lost['at_ms'])}[/yellow] "
            f"(epoch {report.redis_lost['previous']} -> {report.redis_lost['epoch']})."
        )
    for gap in report.gaps:
        lost = "the whole journal" if gap.lost_entries < 0 else f"{gap.lost_entries} entries"
        console.print(
            f"[yellow]{gap.journal}: Redis lost {lost} that SQL has[/yellow] "
            f"(journal positions after {gap.after_stream_id} through {gap.through_stream_id}, "
            f"found {_when(gap.detected_at_ms)})"
        )
        if gap.entries:
            table = Table("entry", "account", "credit type", "kind", "amount", "at")
            for e in gap.entries[:DIFFERENCES_SHOWN_MAX]:
                table.add_row(
                    e.id, e.account_id, e.credit_type, e.kind, str(e.amount), _when(e.created_at_ms)
                )
            console.print(table)
    if not report.differences:
        console.print("[green]Redis and SQL agree on every wallet and grant.[/green]")
        return
    table = Table("account", "credit type", "what", "redis", "sql", "repaired")
    repaired = set(report.repaired)
    for d in report.differences[:DIFFERENCES_SHOWN_MAX]:
        table.add_row(
            d.account_id,
            d.credit_type,
            d.what,
            "-" if d.redis is None else str(d.redis),
            "-" if d.sql is None else str(d.sql),
            "yes" if (d.account_id, d.credit_type) in repaired else "no",
        )
    console.print(table)
    if len(report.differences) > DIFFERENCES_SHOWN_MAX:
        console.print(f"... and {len(report.differences) - DIFFERENCES_SHOWN_MAX} more")
    if report.repair_skipped:
        console.print(
            f"[yellow]{len(report.repair_skipped)} wallets changed during the repair; "
            "run it again[/yellow]"
        )
