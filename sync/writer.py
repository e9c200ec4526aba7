"""Writes a batch of journal entries to SQL in the caller's transaction, exactly once.

Ledger rows and hold events are inserted with ON CONFLICT DO NOTHING; only the rows that
were really inserted move the snapshots (wallet balance and debt, grant remainders, hold
states) and announce their webhook events (sync/webhooks_entries), so a batch written twice
changes nothing the second time.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import and_, bindparam, func, select, update
from sqlalchemy.engine import Connection

from meter.wire import DEBT
from meter.wire import JournalField as F
from sync.bulk import insert_new
from sync.copywrite import copy_ledger
from sync.journal import Entry
from sync.models import T_ACCOUNTS, T_CURSORS, T_GRANTS, T_HOLD_EVENTS, T_HOLDS, T_LEDGER, T_WALLETS
from sync.sqlops import dialect_insert, insert_ignore
from sync.topup_attempts import claim_crossings
from sync.webhooks_entries import emit_entry_events, topup_crossings

HOLD_STATUS = {"hold_settle": "settled", "hold_release": "released", "hold_expire": "expired"}


@dataclass
class WriteResult:
    ledger_inserted: int = 0
    hold_events_inserted: int = 0
    # (entry id, account id, credit type) of the new entries that crossed a top-up threshold
    topup_crossings: list[tuple[str, str, str]] = field(default_factory=list)
    # the top-up attempts those crossings claimed, committed with them; theirs to enqueue
    topup_attempts: list[str] = field(default_factory=list)

    def add(self, other: WriteResult) -> None:
        self.ledger_inserted += other.ledger_inserted
        self.hold_events_inserted += other.hold_events_inserted
        self.topup_crossings += other.topup_crossings
        self.topup_attempts += other.topup_attempts


def ensure_wallets(conn: Connection, pairs: set[tuple[str, str]], now_ms: int) -> None:
    """Accounts and wallets an entry refers to exist (they normally come from hydration)."""
    if not pairs:
        return
    accounts = sorted({a for a, _ in pairs})
    conn.execute(
        insert_ignore(conn, T_ACCOUNTS),
        [
            {"id": a, "overdraft_limit": 0, "flagged": False, "created_at_ms": now_ms}
            for a in accounts
        ],
    )
    conn.execute(
        insert_ignore(conn, T_WALLETS),
        [
            {
                "account_id": a,
                "credit_type": ct,
                "balance": 0,
                "debt": 0,
                "held": 0,
                "updated_at_ms": now_ms,
            }
            for a, ct in sorted(pairs)
        ],
    )


def _ledger_row(bucket: int, e: Entry) -> dict[str, object]:
    return {
        "id": e.id,
        "bucket": bucket,
        "stream_id": e.sort_id,
        "account_id": e.account_id,
        "credit_type": e.credit_type,
        "kind": e.kind,
        "amount": e.amount,
        "balance_after": e.balance_after,
        "tool": e.get(F.TOOL),
        "quantity": e.int_field(F.QUANTITY),
        "hold_id": e.get(F.HOLD),
        "breakdown": e.get(F.BREAKDOWN),
        "idempotency_key": e.get(F.IDEMPOTENCY_KEY),
        "reference_id": e.get(F.REFERENCE),
        "source": e.get(F.SOURCE),
        "description": e.get(F.DESCRIPTION),
        "metadata": e.get(F.METADATA),
        "created_at_ms": e.ts_ms,
    }


def _grant_source(e: Entry) -> str:
    if e.kind == "refund":
        return "refund"
    return e.get(F.SOURCE) or ("admin" if e.kind == "adjustment" else "grant")


def write_entries(conn: Connection, bucket: int, entries: list[Entry], now_ms: int) -> WriteResult:
    """Applies entries (in journal order) once; returns what was new. PostgreSQL takes the
    COPY path (sync.copywrite), SQLite row-by-row statements: the same rows either way."""
    result = WriteResult()
    ledger = [e for e in entries if e.is_ledger]
    holds = [e for e in entries if not e.is_ledger]
    fresh: list[Entry] = []  # the ledger entries really inserted, in journal order
    if conn.dialect.name == "postgresql":
        # The ledger's accounts and wallets are made by the COPY path's own statement.
        ensure_wallets(conn, {(e.account_id, e.credit_type) for e in holds}, now_ms)
        if ledger:
            inserted = copy_ledger(conn, bucket, ledger, now_ms)
            fresh = [e for e in ledger if e.id in inserted]
            _describe_new_grants(conn, fresh)
    else:
        ensure_wallets(conn, {(e.account_id, e.credit_type) for e in entries}, now_ms)
        if ledger:
            fresh = _write_ledger(conn, bucket, ledger, now_ms)
    result.ledger_inserted = len(fresh)
    if holds:
        fresh += _write_holds(conn, bucket, holds, result, now_ms)
    emit_entry_events(conn, fresh)
    result.topup_crossings = topup_crossings(fresh)
    if result.topup_crossings:
        result.topup_attempts = claim_crossings(conn, result.topup_crossings, now_ms)
    return result


def _describe_new_grants(conn: Connection, fresh: list[Entry]) -> None:
    """The grants newly inserted entries created get their description (their remainders
    move by the entries' shares, apart from this)."""
    new_grants = []
    for e in fresh:
        if not e.new_grants:
            continue
        by_grant: dict[str, int] = defaultdict(int)
        for p in e.parts:
            by_grant[p.grant_id] += p.delta
        for g in e.new_grants:
            amount = e.amount if e.kind in ("grant", "adjustment") else by_grant.get(g.grant_id, 0)
            new_grants.append(
                {
                    "id": g.grant_id,
                    "account_id": e.account_id,
                    "credit_type": e.credit_type,
                    "amount": amount,
                    "remaining": 0,
                    "category": g.category,
                    "priority": g.priority,
                    "expires_at_ms": g.expires_at_ms,
                    "source": _grant_source(e),
                    "reference_id": e.get(F.REFERENCE) if e.kind != "refund" else e.id,
                    "entry_id": e.id,
                    "created_at_ms": e.ts_ms,
                }
            )
    if new_grants:
        stmt = dialect_insert(conn, T_GRANTS)
        described = [c for c in new_grants[0] if c not in ("id", "remaining")]
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["id"], set_={c: stmt.excluded[c] for c in described}
            ),
            new_grants,
        )


def _write_ledger(conn: Connection, bucket: int, ledger: list[Entry], now_ms: int) -> list[Entry]:
    """The statement path (SQLite); returns the entries really inserted."""
    rows = [_ledger_row(bucket, e) for e in ledger]
    inserted = {r[0] for r in insert_new(conn, T_LEDGER, rows, ("id",))}
    fresh = [e for e in ledger if e.id in inserted]
    if not fresh:
        return fresh
    _describe_new_grants(conn, fresh)
    grant_deltas: dict[str, tuple[int, tuple[str, str]]] = {}
    wallet_deltas: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for e in fresh:
        w = wallet_deltas[(e.account_id, e.credit_type)]
        w[0] += e.amount
        for p in e.parts:
            if p.grant_id == DEBT:
                w[1] -= p.delta  # the debt pseudo-grant's remaining is minus the debt
            else:
                before = grant_deltas.get(p.grant_id, (0, (e.account_id, e.credit_type)))[0]
                grant_deltas[p.grant_id] = (before + p.delta, (e.account_id, e.credit_type))
    # Remainders move by sums, which commute: a delta that arrives before the entry that
    # describes its grant (entries applied out of order) creates the row, and is kept.
    moved = [
        {
            "id": gid,
            "account_id": owner[0],
            "credit_type": owner[1],
            "amount": 0,
            "remaining": d,
            "category": "paid",
            "priority": 50,
            "source": "unknown",
            "created_at_ms": now_ms,
        }
        for gid, (d, owner) in sorted(grant_deltas.items())
        if d
    ]
    if moved:
        stmt = dialect_insert(conn, T_GRANTS)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["id"],
                set_={"remaining": T_GRANTS.c.remaining + stmt.excluded.remaining},
            ),
            moved,
        )
    conn.execute(
        update(T_WALLETS)
        .where(
            and_(
                T_WALLETS.c.account_id == bindparam("acct"),
                T_WALLETS.c.credit_type == bindparam("ct"),
            )
        )
        .values(
            balance=T_WALLETS.c.balance + bindparam("d_balance"),
            debt=T_WALLETS.c.debt + bindparam("d_debt"),
            updated_at_ms=now_ms,
        ),
        [
            {"acct": a, "ct": ct, "d_balance": d[0], "d_debt": d[1]}
            for (a, ct), d in sorted(wallet_deltas.items())
        ],
    )
    return fresh


def _write_holds(
    conn: Connection, bucket: int, events: list[Entry], result: WriteResult, now_ms: int
) -> list[Entry]:
    """Inserts the hold events and moves the holds -> the events that were new."""
    rows = [
        {
            "hold_id": e.id,
            "stream_id": e.sort_id,
            "bucket": bucket,
            "kind": e.kind,
            "amount": e.amount,
            "expires_at_ms": e.int_field(F.EXPIRES_AT_MS),
            "created_at_ms": e.ts_ms,
        }
        for e in events
    ]
    inserted = {(h, s) for h, s in insert_new(conn, T_HOLD_EVENTS, rows, ("hold_id", "stream_id"))}
    fresh = [e for e in events if (e.id, e.sort_id) in inserted]
    result.hold_events_inserted = len(fresh)
    touched: set[tuple[str, str]] = set()
    for e in fresh:  # in journal order: each event moves the hold's state once
        touched.add((e.account_id, e.credit_type))
        if e.kind == "hold_open":
            conn.execute(
                insert_ignore(conn, T_HOLDS),
                {
                    "id": e.id,
                    "account_id": e.account_id,
                    "credit_type": e.credit_type,
                    "tool": e.get(F.TOOL) or "",
                    "quantity": e.int_field(F.QUANTITY),
                    "amount": e.amount,
                    "status": "active",
                    "expires_at_ms": e.int_field(F.EXPIRES_AT_MS) or 0,
                    "idempotency_key": e.get(F.IDEMPOTENCY_KEY),
                    "created_at_ms": e.ts_ms,
                    "updated_at_ms": e.ts_ms,
                },
            )
            continue
        values: dict[str, object] = {"updated_at_ms": e.ts_ms}
        if e.kind in HOLD_STATUS:
            values["status"] = HOLD_STATUS[e.kind]
        if e.kind == "hold_settle":
            values["charged"] = e.amount
            values["charge_entry_id"] = e.get(F.CHARGE_ENTRY)
        elif e.kind == "hold_extend":
            values["expires_at_ms"] = e.int_field(F.EXPIRES_AT_MS)
        elif e.kind == "hold_reduce":
            values["amount"] = e.amount
        conn.execute(update(T_HOLDS).where(T_HOLDS.c.id == e.id).values(**values))
    for acct, ct in sorted(touched):
        held = (
            select(func.coalesce(func.sum(T_HOLDS.c.amount), 0))
            .where(
                T_HOLDS.c.account_id == acct,
                T_HOLDS.c.credit_type == ct,
                T_HOLDS.c.status == "active",
            )
            .scalar_subquery()
        )
        conn.execute(
            update(T_WALLETS)
            .where(T_WALLETS.c.account_id == acct, T_WALLETS.c.credit_type == ct)
            .values(held=held, updated_at_ms=now_ms)
        )
    return fresh


def advance_cursor(conn: Connection, journal: str, sort_id: str, now_ms: int) -> str:
    """The stream's committed position moves forward only; returns where it is now."""
    stmt = dialect_insert(conn, T_CURSORS).values(
        journal=journal, stream_id=sort_id, updated_at_ms=now_ms
    )
    excluded = stmt.excluded
    cursor: str = conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["journal"],
            set_={
                "stream_id": func.max(T_CURSORS.c.stream_id, excluded.stream_id)
                if conn.dialect.name == "sqlite"
                else func.greatest(T_CURSORS.c.stream_id, excluded.stream_id),
                "updated_at_ms": excluded.updated_at_ms,
            },
        ).returning(T_CURSORS.c.stream_id)
    ).scalar_one()
    return cursor


def read_cursor(conn: Connection, journal: str) -> str | None:
    return conn.execute(
        select(T_CURSORS.c.stream_id).where(T_CURSORS.c.journal == journal)
    ).scalar_one_or_none()
