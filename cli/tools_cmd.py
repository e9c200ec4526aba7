"""`creditmeter tools set|list`: price tools and switch them off from the command line.

`set` writes SQL first, then every bucket's Redis replica, so the change applies to the
very next charge. A tool that exists keeps whatever `set` is not told to change.
"""

from __future__ import annotations

import typing

import typer
from rich.markup import escape

from cli.database import schema_checked_url
from cli.tables import JsonFlag, console, print_json, print_table, table
from meter.models import Tool
from sync.settings import get_settings

tools_app = typer.Typer(no_args_is_help=True, add_completion=False, help="Price tools.")

AUDIT_ACTOR = "cli"


def _fail(exc: Exception) -> typing.NoReturn:
    from cli.main import _fail as fail  # here, not at the top: cli.main imports this module

    fail(exc)
    raise SystemExit(1)  # fail exits; this line only tells type checkers so


def _check(tool: Tool) -> None:
    """Every field within SPEC §4 before anything is written (one clear line otherwise)."""
    from meter import bounds, validate
    from sync.catalog_file import DISPLAY_NAME_LEN_MAX

    validate.tool(tool.name)
    validate.credits("cost", tool.cost)
    validate.credit_type(tool.credit_type)
    validate.text("display_name", tool.display_name, DISPLAY_NAME_LEN_MAX)
    validate.text("description", tool.description, bounds.DESCRIPTION_LEN_MAX)


@tools_app.command("set")
def set_(
    name: str = typer.Argument(..., help="tool name: 1-64 of A-Z, 0-9 and _"),
    cost: int | None = typer.Option(None, "--cost", help="credits per unit (integer >= 0)"),
    credit_type: str | None = typer.Option(None, "--credit-type", help="wallet it is paid from"),
    display_name: str | None = typer.Option(None, "--display-name"),
    description: str | None = typer.Option(None, "--description"),
    active: bool | None = typer.Option(
        None, "--active/--inactive", help="--inactive rejects every charge of it at once"
    ),
) -> None:
    """Create or change a tool; a new one needs --cost and --credit-type."""
    from dataclasses import replace

    from meter import validate
    from sync import audit
    from sync.catalog import save_tools
    from sync.catalog_file import tool_change, write_replicas
    from sync.context import context
    from sync.tools import get_tool

    try:
        validate.tool(name)
        settings = get_settings()
        schema_checked_url(settings)
        ctx = context(settings)
        old = get_tool(ctx.engine, name)
        if old is None and (cost is None or credit_type is None):
            raise ValueError(f"tool {name} is new: give both --cost and --credit-type")
        given = {
            "cost": cost,
            "credit_type": credit_type,
            "display_name": display_name,
            "description": description,
            "active": active,
        }
        changes: dict[str, typing.Any] = {k: v for k, v in given.items() if v is not None}
        new = replace(old, **changes) if old is not None else Tool(name=name, **changes)
        _check(new)
        save_tools(ctx.engine, [new])
        write_replicas(ctx.engine, ctx.meter())
        line = tool_change(old, new)
        if line:
            audit.record(ctx.engine, AUDIT_ACTOR, "tool.set", name, changes)
    except Exception as exc:
        _fail(exc)
    state = "active" if new.active else "inactive"
    console().print(
        escape(line or f"tool {name}: unchanged, {new.cost} {new.credit_type} per unit, {state}")
    )


@tools_app.command("list")
def list_(as_json: JsonFlag = False) -> None:
    """List every tool in SQL (what the Redis replicas are restored from)."""
    from sync.db import engine_for
    from sync.tools import list_tools

    try:
        settings = get_settings()
        tools = list_tools(engine_for(schema_checked_url(settings)))
    except Exception as exc:
        _fail(exc)
    if as_json:  # the shape of GET /v1/tools
        print_json({"data": [_tool_json(t) for t in tools]})
        return
    if not tools:
        console().print("no tools yet: creditmeter tools set NAME --cost N --credit-type TYPE")
        return
    rows = table("name", "cost", "credit type", "active", "display name", "description")
    for t in tools:
        rows.add_row(
            t.name,
            str(t.cost),
            t.credit_type,
            "yes" if t.active else "no",
            escape(t.display_name),
            escape(t.description),
        )
    print_table(rows)


def _tool_json(t: Tool) -> dict[str, object]:
    return {
        "name": t.name,
        "display_name": t.display_name,
        "description": t.description,
        "cost": t.cost,
        "credit_type": t.credit_type,
        "active": t.active,
    }
