"""The audit log: who (an API key id, or "cli") did which admin action to what."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.engine import Connection

from meter.times import now_ms
from sync.db import write_transaction
from sync.models import T_AUDIT


def record_in(
    conn: Connection, actor: str, action: str, target: str, detail: dict[str, Any]
) -> None:
    """Records inside the caller's transaction, so the action and its record commit together."""
    conn.execute(
        T_AUDIT.insert(),
        {
            "actor": actor,
            "action": action,
            "target": target,
            "detail": json.dumps(detail, sort_keys=True, separators=(",", ":")),
            "created_at_ms": now_ms(),
        },
    )


def record(engine: Engine, actor: str, action: str, target: str, detail: dict[str, Any]) -> None:
    write_transaction(engine, lambda conn: record_in(conn, actor, action, target, detail))
