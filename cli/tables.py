"""How list commands print: a table that never hides a value, or JSON with --json.

In a terminal a table fits the window: a long cell goes on over several lines rather than
being cut with an ellipsis. Piped or redirected, it is printed as wide as its
longest row, so `creditmeter keys list | grep ci` shows the whole id `keys revoke` needs.
--json prints one JSON document for scripts, shaped like the API's answer for the same list.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Annotated

import typer
from rich.console import Console, JustifyMethod
from rich.table import Table

# Measuring a table as if the screen were this wide gives the width of its longest row.
MEASURE_WIDTH_MAX = 1_000_000

JsonFlag = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


def table(*columns: str, right_aligned: Collection[str] = ()) -> Table:
    """A table whose cells fold onto more lines when narrowed, never end in an ellipsis;
    right_aligned columns hold numbers."""
    out = Table()
    for name in columns:
        justify: JustifyMethod = "right" if name in right_aligned else "left"
        out.add_column(name, justify=justify, overflow="fold")
    return out


def console() -> Console:
    # Made per command, not at import, so it sizes itself to the terminal it runs in.
    return Console(highlight=False)


def print_table(rows: Table, out: Console | None = None) -> None:
    """In a terminal: fitted to it. Otherwise: at the table's full width, nothing cut."""
    out = out or console()
    if out.is_terminal:
        out.print(rows)
        return
    unbounded = out.options.update(width=MEASURE_WIDTH_MAX)
    out.width = max(out.measure(rows, options=unbounded).maximum, out.width)
    out.print(rows)


def print_json(document: object) -> None:
    """One JSON document on stdout (plain print: rich would wrap and colour it)."""
    print(json.dumps(document, ensure_ascii=False, indent=2), flush=True)
