"""`creditmeter`: the command line on top of meter/ (and, as they land, sync/, worker/, api/)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import redis
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from cli.accounts_cmd import accounts_app
from cli.catalog_cmd import catalog_app
from cli.database import refuse_missing_sqlite, schema_checked_url
from cli.deadletters_cmd import deadletters_app
from cli.keys_cmd import keys_app
from cli.report_cmd import report_app
from cli.stripe_cmd import stripe_app
from cli.tools_cmd import tools_app
from cli.topup_cmd import topup_app
from cli.webhooks_cmd import webhooks_app
from sync.settings import Settings, get_settings

# uvicorn kills a worker that has not answered its health check in time (default 5 s); a
# worker importing FastAPI, SQLAlchemy and redis on a loaded host can take longer to start.
WORKER_HEALTHCHECK_TIMEOUT_S = 60

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Credit metering on Redis Lua.")
console = Console()
err = Console(stderr=True)
app.add_typer(keys_app, name="keys")
app.add_typer(tools_app, name="tools")
app.add_typer(accounts_app, name="accounts")
app.add_typer(catalog_app, name="catalog")
app.add_typer(stripe_app, name="stripe")
app.add_typer(report_app, name="report")
app.add_typer(deadletters_app, name="deadletters")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(topup_app, name="topup")


def _fail(exc: Exception) -> None:
    """One clear line and exit 1 (a database error's own message, without SQLAlchemy's
    statement dump and help link)."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    if isinstance(exc, ValidationError):  # its first line only counts the errors
        text = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
    first = text.splitlines()[0] if text else type(exc).__name__
    err.print(f"[red]error:[/red] {escape(first)}", soft_wrap=True, highlight=False)
    sys.exit(1)


@app.callback()
def _main(ctx: typer.Context) -> None:
    """While `creditmeter up` runs on the embedded Redis, every other command uses that
    server instead of starting a second one on the same data directory."""
    if ctx.invoked_subcommand == "up":
        return
    from cli.service import running_redis_url

    try:
        url = running_redis_url(get_settings())
    except Exception as exc:
        _fail(exc)
    if url:
        os.environ["CREDITMETER_REDIS_URL"] = url
        get_settings.cache_clear()


@app.command()
def up(
    host: str = typer.Option("127.0.0.1", help="address the API listens on"),
    port: int = typer.Option(8000, help="TCP port of the API"),
    catalog: Annotated[
        Path | None, typer.Option(help="catalog to apply (default: examples/catalog.toml)")
    ] = None,
) -> None:
    """Start everything: embedded Redis, SQL, catalog, API and a worker; Ctrl-C stops it."""
    from cli.service import run_up

    sys.exit(run_up(get_settings(), host=host, port=port, catalog=catalog, console=console))


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


def _check_redis_reachable(settings: Settings) -> None:
    """Raise one clear error for a configured Redis that does not answer, before uvicorn
    starts: its lifespan would report the same failure as a 100-line traceback."""
    from meter.embedded import check_noeviction
    from meter.redis_conn import sync_client

    checks: list[tuple[str, str | None, Callable[[redis.Redis], object]]] = [
        ("CREDITMETER_REDIS_URL", settings.redis_url, check_noeviction),
        ("CREDITMETER_QUEUE_REDIS_URL", settings.queue_redis_url, redis.Redis.ping),
    ]
    for setting, url, check in checks:
        if not url:
            continue  # unset: the embedded server (started by the API) or the balance Redis
        client = sync_client(url)
        try:
            check(client)
        except redis.RedisError as exc:
            raise RuntimeError(f"cannot reach Redis at {setting}: {exc}") from exc
        finally:
            client.close()


@app.command()
def api(
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    port: int = typer.Option(8000, help="TCP port"),
    workers: int = typer.Option(1, min=1, help="uvicorn worker processes"),
) -> None:
    """Serve the HTTP API (uvicorn) on a database at the newest schema."""
    import uvicorn

    from api.metrics import prepare_multiprocess_dir

    settings = get_settings()
    try:
        _check_redis_reachable(settings)
        schema_checked_url(settings)
        prepare_multiprocess_dir(settings)
    except Exception as exc:
        _fail(exc)
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_TIMEOUT_S,
    )


@app.command()
def worker(
    burst: bool = typer.Option(False, help="enqueue a flush and a sweep, work until idle, exit"),
) -> None:
    """Run an RQ worker: journal flushes (on traffic and every few seconds), expiry sweeps."""
    from worker.main import run

    settings = get_settings()
    try:
        schema_checked_url(settings)
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
        refuse_missing_sqlite(get_settings())
        ctx = context(get_settings())
        report = run_reconcile(ctx.redis, ctx.engine, ctx.keys, repair=repair)
    except Exception as exc:
        _fail(exc)
        return
    show(report, console)
    for (account_id, credit_type), amount in sorted(report.explained_by_dead_letters.items()):
        console.print(
            f"[yellow]{escape(account_id)}/{credit_type}: the difference is its dead letters "
            f"({amount}); not repaired: run `creditmeter deadletters retry`[/yellow]",
            soft_wrap=True,
        )
    if report.busy:
        console.print(
            f"{len(report.busy)} wallets kept changing while compared (busy, not compared): "
            + ", ".join(escape(f"{a}/{ct}") for a, ct in report.busy),
            soft_wrap=True,
        )
    if report.repair_skipped:
        console.print(
            "changed, skipped: "
            + ", ".join(escape(f"{a}/{ct}") for a, ct in report.repair_skipped),
            soft_wrap=True,
        )
    sys.exit(0 if report.ok else 1)
