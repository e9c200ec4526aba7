"""Usage errors: the command was asked wrongly (a missing or bad option value).

They exit 2, as click does for an option it checks itself, with one line on stderr naming
the option, so a script can tell "asked wrongly" (2) from "failed while running" (1).
"""

from __future__ import annotations

import typing

from rich.console import Console
from rich.markup import escape

USAGE_ERROR_EXIT = 2  # click's own code for a usage error


def usage_error(option: str, message: str) -> typing.NoReturn:
    """Print `error: OPTION: MESSAGE` on stderr and exit USAGE_ERROR_EXIT."""
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    err.print(f"[red]error:[/red] {option}: {escape(message)}")
    raise SystemExit(USAGE_ERROR_EXIT)
