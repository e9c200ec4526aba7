"""The tool catalog and welcome grants in SQL, the source of truth the replicas restore from."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.engine import Connection

from meter.models import Tool
from meter.times import now_ms
from sync.db import write_transaction
from sync.models import T_TOOLS, T_WELCOME
from sync.sqlops import dialect_insert


def save_tools(engine: Engine, tools: list[Tool]) -> None:
    """Upserts tools in SQL. Callers then write the Redis replicas (Meter.set_tools)."""

    def txn(conn: Connection) -> None:
        now = now_ms()
        for t in tools:
            stmt = dialect_insert(conn, T_TOOLS).values(
                name=t.name,
                display_name=t.display_name,
                description=t.description,
                cost=t.cost,
                credit_type=t.credit_type,
                active=t.active,
                rate_limit=t.rate_limit,
                updated_at_ms=now,
            )
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["name"],
                    set_={
                        c: stmt.excluded[c]
                        for c in (
                            "display_name",
                            "description",
                            "cost",
                            "credit_type",
                            "active",
                            "rate_limit",
                            "updated_at_ms",
                        )
                    },
                )
            )

    write_transaction(engine, txn)


def set_welcome_grant(
    engine: Engine,
    credit_type: str,
    amount: int,
    *,
    category: str = "promotional",
    priority: int = 50,
    expires_in_s: int | None = None,
) -> None:
    """What every new account receives in `credit_type` (amount 0 removes it)."""

    def txn(conn: Connection) -> None:
        conn.execute(T_WELCOME.delete().where(T_WELCOME.c.credit_type == credit_type))
        if amount > 0:
            conn.execute(
                T_WELCOME.insert(),
                {
                    "credit_type": credit_type,
                    "amount": amount,
                    "category": category,
                    "priority": priority,
                    "expires_in_s": expires_in_s,
                },
            )

    write_transaction(engine, txn)
