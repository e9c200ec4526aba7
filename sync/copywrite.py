"""The PostgreSQL path of the flush's ledger step: COPY into staging, then set-based SQL.

One batch of ledger entries costs four round trips whatever its size: the rows are COPYed
into a session-private staging table (with each entry's debt move and its first grant share),
the other grant shares (an entry that burned several grants) into a second one, as COPY text
built straight from the entries' fields in one buffer, then one statement inserts the ledger
rows with ON CONFLICT DO NOTHING, the accounts and wallets the batch names, and from the rows
really inserted (RETURNING) moves the wallets' balance and debt and the grants' remainders by
sums grouped in SQL. A batch written again inserts no ledger row, so nothing moves (exactly
once, as on SQLite). The staging tables are emptied by the statement itself, so a caller may
write several batches in one transaction (the flush's entry-by-entry retry, its canary) and
each sees only its own.
"""

from __future__ import annotations

import re

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
# The staging row's columns in the order _copy_text writes them: the ledger's, then the
# entry's debt move and its first share of a real grant (NULL id: none).
STAGED_COLUMNS = (
    "id",
    "bucket",
    "stream_id",
    "account_id",
    "credit_type",
    "kind",
    "amount",
    "balance_after",
    "tool",
    "quantity",
    "hold_id",
    "breakdown",
    "idempotency_key",
    "reference_id",
    "source",
    "description",
    "metadata",
    "created_at_ms",
    "d_debt",
    "grant_id",
    "grant_delta",
)
_STAGED = ", ".join(f'"{c}"' for c in STAGED_COLUMNS)
# COPY text format: a backslash, tab, newline or carriage return in a value is escaped.
_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_NULL = "\\N"
_TOOL, _QUANTITY, _HOLD = F.TOOL.value, F.QUANTITY.value, F.HOLD.value
_BREAKDOWN, _IDEM = F.BREAKDOWN.value, F.IDEMPOTENCY_KEY.value
_REFERENCE, _SOURCE = F.REFERENCE.value, F.SOURCE.value
_DESCRIPTION, _METADATA = F.DESCRIPTION.value, F.METADATA.value

# Created in the batch's own transaction every time (a notice when they exist): a creation
# remembered per session would be wrong after the savepoint that made it rolled back.
_CREATE = f"""
CREATE TEMP TABLE IF NOT EXISTS {STAGE_LEDGER}
    (LIKE ledger_entries INCLUDING DEFAULTS, d_debt BIGINT NOT NULL, grant_id TEXT,
     grant_delta BIGINT NOT NULL) ON COMMIT DELETE ROWS;
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
    SELECT s.account_id, s.credit_type, s.amount, s.d_debt, s.grant_id, s.grant_delta
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
    FROM (SELECT grant_id, account_id, credit_type, grant_delta AS delta
          FROM fresh WHERE grant_id IS NOT NULL
          UNION ALL
          SELECT s.grant_id, s.account_id, s.credit_type, s.delta
          FROM {STAGE_PARTS} s JOIN ins ON ins.id = s.entry_id) p
    GROUP BY p.grant_id HAVING sum(p.delta) <> 0 ORDER BY p.grant_id
    ON CONFLICT (id) DO UPDATE SET remaining = grants.remaining + excluded.remaining
), emptied_ledger AS (
    DELETE FROM {STAGE_LEDGER}
), emptied_parts AS (
    DELETE FROM {STAGE_PARTS}
)
SELECT id FROM ins
"""


def _text(value: str | None) -> str:
    """One value of a COPY text row: NULL, or the text with its special characters escaped."""
    if value is None:
        return _NULL
    if _COPY_SPECIAL.search(value) is None:
        return value
    return value.translate(_COPY_ESCAPES)


def _copy_text(bucket: int, ledger: list[Entry], encoding: str) -> tuple[bytes, bytes]:
    """The two staging tables' COPY text, straight from the entries' fields: per entry the
    ledger row with its debt move (the debt pseudo-grant's remaining is minus the debt) and
    its first share of a real grant; its further shares one row each in the second. Every
    text value of a row comes from the entry's fields, so an entry none of whose fields has
    a character COPY escapes (nearly all) is joined as it is, with one search per entry."""
    rows: list[str] = []
    parts: list[str] = []
    for e in ledger:
        f = e.fields
        plain = _COPY_SPECIAL.search("".join(f.values())) is None
        quantity = f.get(_QUANTITY)
        d_debt = 0
        grant_id = None
        grant_delta = 0
        for p in e.parts:
            if p.grant_id == DEBT:
                d_debt -= p.delta
            elif grant_id is None:
                grant_id, grant_delta = p.grant_id, p.delta
            else:
                part = (e.id, e.account_id, e.credit_type, p.grant_id, str(p.delta))
                parts.append("\t".join(part if plain else [_text(v) for v in part]))
        values = (
            e.id,
            str(bucket),
            sortable(e.stream_id),
            e.account_id,
            e.credit_type,
            e.kind,
            str(e.amount),
            str(e.balance_after),
            f.get(_TOOL) or None,  # an empty optional field is NULL, as on the statement path
            str(int(quantity)) if quantity else None,
            f.get(_HOLD) or None,
            f.get(_BREAKDOWN) or None,
            f.get(_IDEM) or None,
            f.get(_REFERENCE) or None,
            f.get(_SOURCE) or None,
            f.get(_DESCRIPTION) or None,
            f.get(_METADATA) or None,
            str(e.ts_ms),
            str(d_debt),
            grant_id,
            str(grant_delta),
        )
        if plain:
            rows.append("\t".join([_NULL if v is None else v for v in values]))
        else:
            rows.append("\t".join([_text(v) for v in values]))
    return _lines(rows, encoding), _lines(parts, encoding)


def _lines(rows: list[str], encoding: str) -> bytes:
    return ("\n".join(rows) + "\n").encode(encoding) if rows else b""


def copy_ledger(conn: Connection, bucket: int, ledger: list[Entry], now_ms: int) -> set[str]:
    """Writes the ledger entries and moves the snapshots by those really inserted; returns
    their ids. A driver error is raised as SQLAlchemy raises it (DataError, IntegrityError,
    OperationalError...), so the flush tells a refused row from a lost connection the same
    way on both paths."""
    raw = conn.connection.driver_connection
    assert raw is not None
    rows, parts = _copy_text(bucket, ledger, raw.info.encoding)
    dbapi_error = conn.dialect.loaded_dbapi.Error
    try:
        with raw.cursor() as cur:
            cur.execute(_CREATE)
            with cur.copy(f"COPY {STAGE_LEDGER} ({_STAGED}) FROM STDIN") as copy:
                copy.write(rows)
            if parts:
                with cur.copy(f"COPY {STAGE_PARTS} FROM STDIN") as copy:
                    copy.write(parts)
            cur.execute(_apply_sql(now_ms))
            inserted = {r[0] for r in cur.fetchall()}
    except dbapi_error as exc:
        raise DBAPIError.instance("COPY ledger batch", None, exc, dbapi_error) from exc
    return inserted
