"""What every sync test ends with: per wallet Redis == SQL, and the SQL ledger explains SQL."""

from __future__ import annotations

import redis
from sqlalchemy import Engine, func, select

from meter.keys import Keys
from sync.models import T_LEDGER, T_WALLETS
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
