"""Tool reads and partial updates in SQL (writes of whole tools: sync.catalog.save_tools)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy import Engine, select

from meter.models import Tool
from sync.catalog import save_tools
from sync.loader import load_tools
from sync.models import T_TOOLS


def list_tools(engine: Engine) -> list[Tool]:
    with engine.connect() as conn:
        return load_tools(conn)


def get_tool(engine: Engine, name: str) -> Tool | None:
    with engine.connect() as conn:
        row = conn.execute(select(T_TOOLS).where(T_TOOLS.c.name == name)).mappings().first()
    if row is None:
        return None
    return Tool(
        name=row["name"],
        cost=row["cost"],
        credit_type=row["credit_type"],
        active=bool(row["active"]),
        display_name=row["display_name"],
        description=row["description"],
        rate_limit=row["rate_limit"],
    )


def patch_tool(engine: Engine, name: str, changes: dict[str, Any]) -> Tool | None:
    """The tool with `changes` applied and saved, or None when there is no such tool."""
    current = get_tool(engine, name)
    if current is None:
        return None
    updated = replace(current, **changes)
    save_tools(engine, [updated])
    return updated
