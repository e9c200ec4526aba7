"""What every sync test ends with: per wallet Redis == SQL, and the SQL ledger explains SQL."""

from __future__ import annotations

import json

import redis
from sqlalchemy import Engine, func, select

from meter.keys import Keys
from sync.journal import sortable
from sync.models import T_DEAD, T_LEDGER, T_WALLETS
from sync.reconcile import ReconcileReport, reconcile, redis_wallets


def assert_in_sync(client: redis.Redis, engine: Engine, keys: Keys) -> ReconcileReport:
    """Drains the journal; then every Redis wallet equals its SQL snapshot (balance, debt,
    held, each grant), and each snapshot balance is the sum of its ledger entries."""
    report = reconcile(client, engine, keys)
    assert report.differences == [], report.differences
    wallets = redis_wallets(client, keys)
    with engine.connect() as conn:
        for account_id, credit_type in wallets:
            ledger_sum, rows, distinct = conn.execute(
                select(
                    func.coalesce(func.sum(T_LEDGER.c.amount), 0),
                    func.count(),
                    func.count(func.distinct(T_LEDGER.c.id)),
                ).where(T_LEDGER.c.account_id == account_id, T_LEDGER.c.credit_type == credit_type)
            ).one()
            assert rows == distinct
            snapshot = conn.execute(
                select(T_WALLETS.c.balance).where(
                    T_WALLETS.c.account_id == account_id, T_WALLETS.c.credit_type == credit_type
                )
            ).scalar_one()
            assert snapshot == ledger_sum, (account_id, credit_type, snapshot, ledger_sum)
    return report


def dead_letter_newest(client: redis.Redis, engine: Engine, journal: str, error: str) -> None:
    """Moves the journal's newest entry into dead_letters, as the flush does with an entry
    SQL refuses on its own (so a test can make one without breaking SQL)."""
    [(stream_id, fields)] = client.xrevrange(journal, count=1)
    client.xdel(journal, stream_id)
    with engine.begin() as conn:
        conn.execute(
            T_DEAD.insert(),
            {
                "journal": journal,
                "stream_id": sortable(stream_id.decode()),
                "fields": json.dumps({k.decode(): v.decode() for k, v in fields.items()}),
                "error": error,
                "created_at_ms": 1,
            },
        )
