"""SQL -> Redis: the loader the meter clients call when a wallet or the catalog is missing.

An account SQL has never seen is created on first touch with the catalog's welcome grants,
in one transaction whose account INSERT ... ON CONFLICT DO NOTHING decides the one winner
when many requests race: only the request that inserted the account writes the grants.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import replace

from sqlalchemy import Engine, and_, func, select, union_all, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError

from meter import bounds, wire
from meter.ids import new_id
from meter.keys import Keys
from meter.models import (
    ChargePart,
    ChargeRecord,
    GrantInfo,
    GrantPart,
    HoldSnapshot,
    StoredResult,
    Tool,
    WalletSnapshot,
)
from meter.times import now_ms
from sync.db import write_transaction
from sync.models import (
    T_ACCOUNTS,
    T_GRANTS,
    T_HOLDS,
    T_LEDGER,
    T_THRESHOLDS,
    T_TOOLS,
    T_WALLETS,
    T_WELCOME,
)
from sync.sqlops import insert_ignore
from sync.writer import ensure_wallets

log = logging.getLogger(__name__)


class SqlLoader:
    def __init__(self, engine: Engine, keys: Keys, clock_ms: Callable[[], int] = now_ms) -> None:
        self.engine = engine
        self.keys = keys
        self.clock_ms = clock_ms

    def load_wallet(
        self, account_id: str, credit_type: str, *, create: bool = True
    ) -> WalletSnapshot | None:
        if not create:
            with self.engine.connect() as conn:
                known = conn.execute(
                    select(T_ACCOUNTS.c.id).where(T_ACCOUNTS.c.id == account_id)
                ).first()
            if known is None:
                return None

        def txn(conn: Connection) -> WalletSnapshot:
            now = self.clock_ms()
            if _create_account(conn, account_id, now):
                _welcome(conn, self.keys, account_id, now)
            ensure_wallets(conn, {(account_id, credit_type)}, now)
            snap = wallet_snapshot(conn, account_id, credit_type)
            return replace(snap, idempotency=recent_idempotency_keys(conn, account_id, now))

        return write_transaction(self.engine, txn)

    def load_catalog(self) -> list[Tool]:
        with self.engine.connect() as conn:
            return load_tools(conn)

    def account_credit_types(self, account_id: str) -> list[str]:
        """Credit types SQL has wallets of. While SQL is down: none, so a balance read lists
        the catalog's credit types from Redis and keeps answering (issue 12)."""
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(T_WALLETS.c.credit_type).where(T_WALLETS.c.account_id == account_id)
                )
                return sorted(rows.scalars())
        except OperationalError as exc:
            log.warning("SQL unavailable; balance lists the catalog's credit types: %s", exc.orig)
            return []

    def load_hold_owner(self, hold_id: str) -> tuple[str, str] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(T_HOLDS.c.account_id, T_HOLDS.c.credit_type).where(
                    T_HOLDS.c.id == hold_id, T_HOLDS.c.status == "active"
                )
            ).first()
        return None if row is None else (row[0], row[1])

    def load_charge(self, charge_id: str) -> ChargeRecord | None:
        with self.engine.connect() as conn:
            return charge_record(conn, charge_id)

    def load_stored_result(self, account_id: str, idempotency_key: str) -> StoredResult | None:
        with self.engine.connect() as conn:
            return stored_result(conn, account_id, idempotency_key)


def recent_idempotency_keys(
    conn: Connection, account_id: str, now_ms: int
) -> tuple[tuple[str, int], ...]:
    """The idempotency keys the account used within the TTL, newest first, as (key,
    expires_at_ms): what Redis must remember after it lost its data. A request sent without
    a key used its own entry (or hold) id, which no client can send again: left out."""
    ttl_ms = bounds.IDEMPOTENCY_TTL_S * 1000
    since_ms = now_ms - ttl_ms
    used = union_all(
        select(T_LEDGER.c.idempotency_key.label("k"), T_LEDGER.c.created_at_ms.label("at")).where(
            T_LEDGER.c.account_id == account_id,
            T_LEDGER.c.created_at_ms > since_ms,
            T_LEDGER.c.idempotency_key.is_not(None),
            T_LEDGER.c.idempotency_key != T_LEDGER.c.id,
        ),
        select(T_HOLDS.c.idempotency_key.label("k"), T_HOLDS.c.created_at_ms.label("at")).where(
            T_HOLDS.c.account_id == account_id,
            T_HOLDS.c.created_at_ms > since_ms,
            T_HOLDS.c.idempotency_key.is_not(None),
            T_HOLDS.c.idempotency_key != T_HOLDS.c.id,
        ),
    ).subquery()
    last = func.max(used.c.at)
    rows = conn.execute(
        select(used.c.k, last)
        .group_by(used.c.k)
        .order_by(last.desc())
        .limit(bounds.IDEM_RESTORE_MAX)
    ).all()
    return tuple((key, int(at) + ttl_ms) for key, at in rows)


def stored_result(conn: Connection, account_id: str, idempotency_key: str) -> StoredResult | None:
    """What the request with this key did: its ledger entry (the first, for a request that
    wrote several), else the hold it opened."""
    entry = (
        conn.execute(
            select(T_LEDGER)
            .where(
                T_LEDGER.c.account_id == account_id, T_LEDGER.c.idempotency_key == idempotency_key
            )
            .order_by(T_LEDGER.c.created_at_ms, T_LEDGER.c.id)
            .limit(1)
        )
        .mappings()
        .first()
    )
    if entry is not None:
        refunded = 0
        if entry["kind"] == "refund" and entry["reference_id"]:
            refunded = conn.execute(
                select(func.coalesce(func.sum(T_LEDGER.c.amount), 0)).where(
                    T_LEDGER.c.kind == "refund",
                    T_LEDGER.c.reference_id == entry["reference_id"],
                    T_LEDGER.c.created_at_ms <= entry["created_at_ms"],
                )
            ).scalar_one()
        return StoredResult(
            kind=entry["kind"],
            id=entry["id"],
            credit_type=entry["credit_type"],
            amount=entry["amount"],
            balance_after=entry["balance_after"],
            tool=entry["tool"],
            quantity=entry["quantity"],
            breakdown=entry["breakdown"] or "",
            reference_id=entry["reference_id"],
            hold_id=entry["hold_id"],
            refunded_total=int(refunded),
        )
    hold = (
        conn.execute(
            select(T_HOLDS).where(
                T_HOLDS.c.account_id == account_id, T_HOLDS.c.idempotency_key == idempotency_key
            )
        )
        .mappings()
        .first()
    )
    if hold is None:
        return None
    before = conn.execute(
        select(T_LEDGER.c.balance_after)
        .where(
            and_(
                T_LEDGER.c.account_id == account_id,
                T_LEDGER.c.credit_type == hold["credit_type"],
                T_LEDGER.c.created_at_ms <= hold["created_at_ms"],
            )
        )
        .order_by(T_LEDGER.c.created_at_ms.desc(), T_LEDGER.c.stream_id.desc())
        .limit(1)
    ).scalar_one_or_none()
    return StoredResult(
        kind="hold",
        id=hold["id"],
        credit_type=hold["credit_type"],
        amount=hold["amount"],
        balance_after=int(before or 0),
        tool=hold["tool"],
        quantity=hold["quantity"],
        expires_at_ms=hold["expires_at_ms"],
    )


def charge_record(conn: Connection, charge_id: str) -> ChargeRecord | None:
    """The charge's refund record, rebuilt from the ledger: what it took from each grant,
    less what refunds gave back, last part first (as the refund script gives back)."""
    charge = (
        conn.execute(
            select(T_LEDGER).where(T_LEDGER.c.id == charge_id, T_LEDGER.c.kind == "charge")
        )
        .mappings()
        .first()
    )
    if charge is None:
        return None
    refunded = conn.execute(
        select(func.coalesce(func.sum(T_LEDGER.c.amount), 0)).where(
            T_LEDGER.c.kind == "refund", T_LEDGER.c.reference_id == charge_id
        )
    ).scalar_one()
    taken = [(p.grant_id, -p.delta) for p in wire.parse_breakdown(charge["breakdown"])]
    grants = {
        g["id"]: g
        for g in conn.execute(
            select(T_GRANTS).where(T_GRANTS.c.id.in_([gid for gid, _ in taken]))
        ).mappings()
    }
    left = int(refunded)
    refundable = [amount for _, amount in taken]
    for i in range(len(taken) - 1, -1, -1):
        give = min(refundable[i], left)
        refundable[i] -= give
        left -= give
    parts = []
    for (gid, _), amount in zip(taken, refundable, strict=True):
        g = grants.get(gid)
        if g is None:  # the debt part
            parts.append(ChargePart(gid, amount, 0, 0, wire.charge_part_category(None)))
        else:
            cat = wire.charge_part_category(g["category"])
            parts.append(ChargePart(gid, amount, g["priority"], g["expires_at_ms"] or 0, cat))
    return ChargeRecord(
        account_id=charge["account_id"],
        credit_type=charge["credit_type"],
        tool=charge["tool"] or "",
        charged=-charge["amount"],
        refunded=int(refunded),
        parts=tuple(parts),
    )


def load_tools(conn: Connection) -> list[Tool]:
    rows = conn.execute(select(T_TOOLS).order_by(T_TOOLS.c.name)).mappings()
    return [
        Tool(
            name=r["name"],
            cost=r["cost"],
            credit_type=r["credit_type"],
            active=bool(r["active"]),
            display_name=r["display_name"],
            description=r["description"],
            rate_limit=r["rate_limit"],
        )
        for r in rows
    ]


def _create_account(conn: Connection, account_id: str, now_ms: int) -> bool:
    """True for the one transaction that created the account."""
    stmt = insert_ignore(conn, T_ACCOUNTS).returning(T_ACCOUNTS.c.id)
    row = conn.execute(
        stmt,
        {"id": account_id, "overdraft_limit": 0, "flagged": False, "created_at_ms": now_ms},
    ).first()
    return row is not None


def _welcome(conn: Connection, keys: Keys, account_id: str, now_ms: int) -> None:
    """The catalog's welcome grants, written straight to SQL (the wallet is hydrated from it)."""
    bucket = keys.bucket(account_id)
    for w in conn.execute(select(T_WELCOME).order_by(T_WELCOME.c.credit_type)).mappings():
        entry_id, grant_id = new_id(bucket), new_id(bucket)
        expires = now_ms + w["expires_in_s"] * 1000 if w["expires_in_s"] else None
        amount, ct = w["amount"], w["credit_type"]
        ensure_wallets(conn, {(account_id, ct)}, now_ms)
        conn.execute(
            update(T_WALLETS)
            .where(T_WALLETS.c.account_id == account_id, T_WALLETS.c.credit_type == ct)
            .values(balance=T_WALLETS.c.balance + amount)
        )
        conn.execute(
            T_GRANTS.insert(),
            {
                "id": grant_id,
                "account_id": account_id,
                "credit_type": ct,
                "amount": amount,
                "remaining": amount,
                "category": w["category"],
                "priority": w["priority"],
                "expires_at_ms": expires,
                "source": "welcome",
                "reference_id": None,
                "entry_id": entry_id,
                "created_at_ms": now_ms,
            },
        )
        conn.execute(
            T_LEDGER.insert(),
            {
                "id": entry_id,
                "bucket": bucket,
                "stream_id": "",  # written by SQL itself, not through the journal
                "account_id": account_id,
                "credit_type": ct,
                "kind": "grant",
                "amount": amount,
                "balance_after": amount,
                "breakdown": wire.format_breakdown([GrantPart(grant_id, amount, amount)]),
                "source": "welcome",
                "metadata": json.dumps({"welcome": True}),
                "created_at_ms": now_ms,
            },
        )


def wallet_snapshot(conn: Connection, account_id: str, credit_type: str) -> WalletSnapshot:
    """Grants with credits left and active holds, expired ones included: the scripts expire
    them on the next touch and journal it, so SQL learns of the expiry too."""
    overdraft, status = conn.execute(
        select(T_ACCOUNTS.c.overdraft_limit, T_ACCOUNTS.c.status).where(
            T_ACCOUNTS.c.id == account_id
        )
    ).one()
    debt = conn.execute(
        select(T_WALLETS.c.debt).where(
            T_WALLETS.c.account_id == account_id, T_WALLETS.c.credit_type == credit_type
        )
    ).scalar_one()
    grants = conn.execute(
        select(T_GRANTS)
        .where(
            T_GRANTS.c.account_id == account_id,
            T_GRANTS.c.credit_type == credit_type,
            T_GRANTS.c.remaining > 0,
        )
        .order_by(T_GRANTS.c.id)
        .limit(bounds.GRANTS_PER_WALLET_MAX)
    ).mappings()
    holds = conn.execute(
        select(T_HOLDS)
        .where(
            T_HOLDS.c.account_id == account_id,
            T_HOLDS.c.credit_type == credit_type,
            T_HOLDS.c.status == "active",
        )
        .order_by(T_HOLDS.c.id)
        .limit(bounds.HOLDS_PER_WALLET_MAX)
    ).mappings()
    thresholds = {
        r.kind: r.threshold
        for r in conn.execute(
            select(T_THRESHOLDS.c.kind, T_THRESHOLDS.c.threshold).where(
                T_THRESHOLDS.c.account_id == account_id,
                T_THRESHOLDS.c.credit_type == credit_type,
            )
        )
    }
    return WalletSnapshot(
        overdraft_limit=overdraft,
        suspended=status == "suspended",
        debt=debt,
        grants=tuple(
            GrantInfo(
                id=g["id"],
                remaining=g["remaining"],
                priority=g["priority"],
                expires_at_ms=g["expires_at_ms"] or 0,
                category=g["category"],
            )
            for g in grants
        ),
        holds=tuple(
            HoldSnapshot(
                id=h["id"], amount=h["amount"], expires_at_ms=h["expires_at_ms"], tool=h["tool"]
            )
            for h in holds
        ),
        low_threshold=thresholds.get("low"),
        topup_threshold=thresholds.get("topup"),
    )
