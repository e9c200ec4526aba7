"""The Redis dataset epoch: a marker written once per dataset, remembered by SQL.

If SQL remembers an epoch and Redis has none (or another one), Redis lost its dataset
(restarted empty, or restored from elsewhere): wallets then rehydrate from SQL on touch,
and what was acknowledged but never flushed is gone. The loss is recorded so reconcile and
status can say so; a new epoch starts.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import redis
from sqlalchemy import Engine, select
from sqlalchemy.engine import Connection

from meter.keys import Keys
from meter.times import now_ms
from sync.db import write_transaction
from sync.models import T_STATE
from sync.sqlops import dialect_insert


@dataclass(frozen=True)
class EpochCheck:
    epoch: str
    lost: bool  # this check found that Redis lost its dataset
    previous: str | None = None


def _state_key(keys: Keys, name: str) -> str:
    return f"{name}:{keys.prefix}"


def read_state(engine: Engine, keys: Keys, name: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(
            select(T_STATE.c.value).where(T_STATE.c.key == _state_key(keys, name))
        ).scalar_one_or_none()


def _write_state(conn: Connection, keys: Keys, name: str, value: str, now_ms: int) -> None:
    stmt = dialect_insert(conn, T_STATE).values(
        key=_state_key(keys, name), value=value, updated_at_ms=now_ms
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["key"], set_={"value": value, "updated_at_ms": now_ms}
        )
    )


def check_epoch(client: redis.Redis, engine: Engine, keys: Keys) -> EpochCheck:
    """Compares the epochs; records a loss and starts a new epoch when they differ."""
    remembered = read_state(engine, keys, "epoch")
    candidate = uuid.uuid4().hex
    client.set(keys.epoch(), candidate, nx=True)
    raw = client.get(keys.epoch())
    current = raw.decode() if isinstance(raw, bytes) else str(raw)
    if remembered == current:
        return EpochCheck(current, lost=False)
    lost = remembered is not None

    def txn(conn: Connection) -> None:
        now = now_ms()
        _write_state(conn, keys, "epoch", current, now)
        if lost:
            detail = {"at_ms": now, "previous": remembered, "epoch": current}
            _write_state(conn, keys, "redis_lost", json.dumps(detail), now)

    write_transaction(engine, txn)
    return EpochCheck(current, lost=lost, previous=remembered)
