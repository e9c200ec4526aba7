"""`creditmeter catalog apply FILE`: the catalog file into SQL, then every Redis replica.

Idempotent: a second apply of the same file prints that nothing changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from cli.database import schema_checked_url
from sync.settings import get_settings

catalog_app = typer.Typer(no_args_is_help=True, add_completion=False, help="The catalog file.")

AUDIT_ACTOR = "cli"


@catalog_app.command("apply")
def apply(
    path: Annotated[Path, typer.Argument(help="catalog TOML, e.g. examples/catalog.toml")],
) -> None:
    """Apply FILE; prints one line per change."""
    from cli.main import _fail  # here, not at the top: cli.main imports this module
    from sync.catalog_file import apply_catalog, load_catalog
    from sync.context import context

    try:
        catalog = load_catalog(path)
        settings = get_settings()
        schema_checked_url(settings)
        ctx = context(settings)
        lines = apply_catalog(ctx.engine, ctx.meter(), catalog, actor=AUDIT_ACTOR)
    except Exception as exc:
        _fail(exc)
        return
    out = Console(highlight=False)
    if not lines:
        out.print(f"{escape(str(path))}: up to date", soft_wrap=True)
    for line in lines:
        out.print(escape(line), soft_wrap=True)
