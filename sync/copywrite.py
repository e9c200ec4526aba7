"""The PostgreSQL path of the flush's ledger step: COPY into staging, then set-based SQL.

One batch of ledger entries costs four round trips whatever its size: the rows are COPYed
into a session-private staging table (with each entry's debt move), the grant shares into a
second one, then one statement inserts the ledger rows with ON CONFLICT DO NOTHING, the
accounts and wallets the batch names, and from the rows really inserted (RETURNING) moves
the wallets' balance and debt and the grants' remainders by sums grouped in SQL. A
batch written again inserts no ledger row, so nothing moves (exactly once, as on SQLite).
The staging tables are emptied by the statement itself, so a caller may write several batches
in one transaction (the flush's entry-by-entry retry, its canary) and each sees only its own.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from meter.wire import DEBT
from meter.wire import JournalField as F
from sync.journal import Entry, sortable
from sync.models import T_LEDGER

STAGE_LEDGER = "cm_stage_ledger"
STAGE_PARTS = "cm_stage_parts"
LEDGER_COLUMNS = tuple(c.name for c in T_LEDGER.columns)
_COLS = ", ".join(f'"{c}"' for c in LEDGER_COLUMNS)

# Created in the batch's own transaction every time (a notice when they exist): a creation
# remembered per session would be wrong after the savepoint that made it rolled back.
_CREATE = f"""
CREATE TEMP TABLE IF NOT EXISTS {STAGE_LEDGER}
    (LIKE ledger_entries INCLUDING DEFAULTS, d_debt BIGINT NOT NULL) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS {STAGE_PARTS}
    (entry_id TEXT NOT NULL, account_id TEXT NOT NULL, credit_type TEXT NOT NULL,
     grant_id TEXT NOT NULL, delta BIGINT NOT NULL) ON COMMIT DELETE ROWS
"""


def _apply_sql(now_ms: int) -> str:
    """The set-based step, one statement (its CTEs see one snapshot; the wallets' foreign key
    is checked at its end, when the accounts it inserts exist). now_ms is an int, inlined
    as a literal. Rows are taken in key order, as the SQLite path sorts them."""
    now = int(now_ms)
    return f"""
WITH ins AS (
    INSERT INTO ledger_entries ({_COLS}) SELECT {_COLS} FROM {STAGE_LEDGER}
    ON CONFLICT DO NOTHING RETURNING id
), fresh AS (
    SELECT s.account_id, s.credit_type, s.amount, s.d_debt
    FROM {STAGE_LEDGER} s JOIN ins USING (id)
), new_accounts AS (
    INSERT INTO accounts (id, overdraft_limit, flagged, created_at_ms)
    SELECT DISTINCT account_id, 0, false, {now} FROM {STAGE_LEDGER} ORDER BY 1
    ON CONFLICT DO NOTHING
), moved_wallets AS (
    -- A wallet new to SQL starts at its entries' sum, as if made empty and then moved.
    INSERT INTO wallets (account_id, credit_type, balance, debt, held, updated_at_ms)
    SELECT account_id, credit_type, sum(amount), sum(d_debt), 0, {now}
    FROM fresh GROUP BY account_id, credit_type ORDER BY 1, 2
    ON CONFLICT (account_id, credit_type) DO UPDATE SET
        balance = wallets.balance + excluded.balance, debt = wallets.debt + excluded.debt,
        updated_at_ms = excluded.updated_at_ms
), kept_wallets AS (
    -- The wallets only entries already written name (a replay) exist too, unmoved.
    INSERT INTO wallets (account_id, credit_type, balance, debt, held, updated_at_ms)
    SELECT DISTINCT s.account_id, s.credit_type, 0, 0, 0, {now} FROM {STAGE_LEDGER} s
    WHERE NOT EXISTS (SELECT 1 FROM fresh f
                      WHERE f.account_id = s.account_id AND f.credit_type = s.credit_type)
    ORDER BY 1, 2
    ON CONFLICT DO NOTHING
), moved_grants AS (
    -- Remainders move by sums, which commute: a delta that arrives before the entry that
    -- describes its grant creates the row (described later by the caller), and is kept.
    INSERT INTO grants (id, account_id, credit_type, amount, remaining, category, priority,
                        source, created_at_ms)
    SELECT p.grant_id, min(p.account_id), min(p.credit_type), 0, sum(p.delta), 'paid', 50,
           'unknown', {now}
    FROM {STAGE_PARTS} p JOIN ins ON ins.id = p.entry_id
    GROUP BY p.grant_id HAVING sum(p.delta) <> 0 ORDER BY p.grant_id
    ON CONFLICT (id) DO UPDATE SET remaining = grants.remaining + excluded.remaining
), emptied_ledger AS (
    DELETE FROM {STAGE_LEDGER}
), emptied_parts AS (
    DELETE FROM {STAGE_PARTS}
)
SELECT id FROM ins
"""


def _rows(bucket: int, ledger: list[Entry]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Staging rows straight from the entries' fields: the ledger row plus the entry's debt
    move, and one row per share of a real grant (the debt pseudo-grant is the wallet's)."""
    rows: list[tuple[Any, ...]] = []
    parts: list[tuple[Any, ...]] = []
    for e in ledger:
        f = e.fields
        quantity = f.get(F.QUANTITY)
        d_debt = 0
        for p in e.parts:
            if p.grant_id == DEBT:
                d_debt -= p.delta  # the debt pseudo-grant's remaining is minus the debt
            else:
                parts.append((e.id, e.account_id, e.credit_type, p.grant_id, p.delta))
        rows.append(
            (
                e.id,
                bucket,
                sortable(e.stream_id),
                e.account_id,
                e.credit_type,
                e.kind,
                e.amount,
                e.balance_after,
                f.get(F.TOOL) or None,
                int(quantity) if quantity else None,
                f.get(F.HOLD) or None,
                f.get(F.BREAKDOWN) or None,
                f.get(F.IDEMPOTENCY_KEY) or None,
                f.get(F.REFERENCE) or None,
                f.get(F.SOURCE) or None,
                f.get(F.DESCRIPTION) or None,
                f.get(F.METADATA) or None,
                e.ts_ms,
                d_debt,
            )
        )
    return rows, parts


def copy_ledger(conn: Connection, bucket: int, ledger: list[Entry], now_ms: int) -> set[str]:
    """Writes the ledger entries and moves the snapshots by those really inserted; returns
    their ids. A driver error is raised as SQLAlchemy raises it (DataError, IntegrityError,
    OperationalError...), so the flush tells a refused row from a lost connection the same
    way on both paths."""
    rows, parts = _rows(bucket, ledger)
    raw = conn.connection.driver_connection
    assert raw is not None
    dbapi_error = conn.dialect.loaded_dbapi.Error
    try:
        with raw.cursor() as cur:
            cur.execute(_CREATE)
            with cur.copy(f"COPY {STAGE_LEDGER} ({_COLS}, d_debt) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            if parts:
                with cur.copy(f"COPY {STAGE_PARTS} FROM STDIN") as copy:
                    for part in parts:
                        copy.write_row(part)
            cur.execute(_apply_sql(now_ms))
            inserted = {r[0] for r in cur.fetchall()}
    except dbapi_error as exc:
        raise DBAPIError.instance("COPY ledger batch", None, exc, dbapi_error) from exc
    return inserted
