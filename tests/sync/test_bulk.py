"""sync.bulk.insert_new on real SQL (COPY through a staging table on PostgreSQL, executemany
on SQLite): inserts the rows whose key is absent and returns exactly those; a refused row
surfaces as SQLAlchemy's error class, as on every other path."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from sync.bulk import insert_new
from sync.journal import sortable
from sync.models import T_HOLD_EVENTS
from tests.sync.conftest import account

KEY = ("hold_id", "stream_id")


def _events(hold_id: str, seqs: range) -> list[dict[str, Any]]:
    return [
        {
            "hold_id": hold_id,
            "stream_id": sortable(f"1700000000000-{seq}"),
            "bucket": 1,
            "kind": "hold_extend",
            "amount": seq,
            "expires_at_ms": None,
            "created_at_ms": 1_700_000_000_000 + seq,
        }
        for seq in seqs
    ]


def _stored(engine: Engine, hold_id: str) -> list[tuple[str, int]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(T_HOLD_EVENTS.c.stream_id, T_HOLD_EVENTS.c.amount)
            .where(T_HOLD_EVENTS.c.hold_id == hold_id)
            .order_by(T_HOLD_EVENTS.c.stream_id)
        )
        return [(r[0], r[1]) for r in rows]


def _keys(rows: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    return {tuple(r[c] for c in KEY) for r in rows}


def test_returns_exactly_the_rows_it_inserted(engine: Engine) -> None:
    hold_id = account("hold")
    first, more = _events(hold_id, range(0, 3)), _events(hold_id, range(2, 6))
    with engine.begin() as conn:
        assert set(insert_new(conn, T_HOLD_EVENTS, first, KEY)) == _keys(first)
    with engine.begin() as conn:
        assert set(insert_new(conn, T_HOLD_EVENTS, more, KEY)) == _keys(more[1:])
    with engine.begin() as conn:
        assert insert_new(conn, T_HOLD_EVENTS, first + more, KEY) == []
        assert insert_new(conn, T_HOLD_EVENTS, [], KEY) == []
    assert [amount for _, amount in _stored(engine, hold_id)] == list(range(6))


def test_an_existing_key_keeps_its_first_row(engine: Engine) -> None:
    hold_id = account("hold")
    row = _events(hold_id, range(1))
    with engine.begin() as conn:
        insert_new(conn, T_HOLD_EVENTS, row, KEY)
        assert insert_new(conn, T_HOLD_EVENTS, [{**row[0], "amount": 99}], KEY) == []
    assert _stored(engine, hold_id) == [(row[0]["stream_id"], 0)]


def test_many_calls_in_one_transaction_and_across_transactions(engine: Engine) -> None:
    """PostgreSQL reuses one staging table per connection: each call sees only its rows."""
    hold_id = account("hold")
    with engine.begin() as conn:
        for start in range(0, 600, 200):
            batch = _events(hold_id, range(start, start + 200))
            assert set(insert_new(conn, T_HOLD_EVENTS, batch, KEY)) == _keys(batch)
    with engine.begin() as conn:
        batch = _events(hold_id, range(600, 601))
        assert insert_new(conn, T_HOLD_EVENTS, batch, KEY) == [tuple(batch[0][c] for c in KEY)]
    assert len(_stored(engine, hold_id)) == 601


def test_a_refused_row_is_an_integrity_error_and_its_batch_writes_nothing(
    engine: Engine,
) -> None:
    hold_id = account("hold")
    rows = _events(hold_id, range(3))
    rows[1]["amount"] = None  # NOT NULL
    with pytest.raises(IntegrityError), engine.begin() as conn:
        insert_new(conn, T_HOLD_EVENTS, rows, KEY)
    assert _stored(engine, hold_id) == []
    with engine.begin() as conn:  # the connection is usable again
        assert len(insert_new(conn, T_HOLD_EVENTS, _events(hold_id, range(3)), KEY)) == 3
