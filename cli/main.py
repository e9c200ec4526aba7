"""`creditmeter`: the command line on top of meter/ (and, as they land, sync/, worker/, api/)."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from meter.settings import get_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Credit metering on Redis Lua.")
console = Console()
err = Console(stderr=True)


@app.command()
def up() -> None:
    """Start on the embedded defaults and run the hot-path demo."""
    from cli import demo

    try:
        demo.run(get_settings(), console)
    except Exception as exc:  # one clear line, non-zero exit
        err.print(f"[red]error:[/red] {exc}")
        sys.exit(1)


@app.command()
def bench(quick: bool = typer.Option(False, help="tiny sizes, for a smoke run")) -> None:
    """Run the benchmarks side by side and write bench/results/."""
    from bench.__main__ import main

    sys.exit(main(["--quick"] if quick else []))
