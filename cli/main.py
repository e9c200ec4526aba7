"""`creditmeter`: the command line on top of meter/ (and, as they land, sync/, worker/, api/)."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from meter.settings import get_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Credit metering on Redis Lua.")
console = Console()
err = Console(stderr=True)


def _fail(exc: Exception) -> None:
    """One clear line and exit 1 (a database error's own message, without SQLAlchemy's
    statement dump and help link)."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    err.print(f"[red]error:[/red] {escape(first)}", soft_wrap=True, highlight=False)
    sys.exit(1)


@app.command()
def up() -> None:
    """Start on the embedded defaults and run the hot-path demo."""
    from cli import demo

    try:
        demo.run(get_settings(), console)
    except Exception as exc:
        _fail(exc)


@app.command()
def bench(quick: bool = typer.Option(False, help="tiny sizes, for a smoke run")) -> None:
    """Run the benchmarks side by side and write bench/results/."""
    from bench.__main__ import main

    sys.exit(main(["--quick"] if quick else []))


@app.command()
def migrate() -> None:
    """Bring the database (CREDITMETER_DATABASE_URL) to the newest schema."""
    from sync.migrate import current, upgrade

    settings = get_settings()
    try:
        upgrade(settings.database_url)
        console.print(f"database at revision {current(settings.database_url)}")
    except Exception as exc:
        _fail(exc)


@app.command()
def worker(
    burst: bool = typer.Option(False, help="enqueue a flush and a sweep, work until idle, exit"),
) -> None:
    """Run an RQ worker: journal flushes (on traffic and every few seconds), expiry sweeps."""
    from sync.migrate import upgrade
    from worker.main import run

    settings = get_settings()
    try:
        upgrade(settings.database_url)
        run(settings, burst=burst)
    except Exception as exc:
        _fail(exc)


@app.command()
def reconcile(
    repair: bool = typer.Option(False, help="rewrite differing Redis wallets from SQL"),
) -> None:
    """Drain the journal, then compare every Redis wallet and grant with SQL."""
    from cli.reconcile_view import show
    from sync.context import context
    from sync.reconcile import reconcile as run_reconcile

    try:
        ctx = context(get_settings())
        report = run_reconcile(ctx.redis, ctx.engine, ctx.keys, repair=repair)
    except Exception as exc:
        _fail(exc)
        return
    show(report, console)
    sys.exit(0 if report.ok else 1)
