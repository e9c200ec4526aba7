"""Idempotency keys back from SQL, for entries SQL has that Redis lost.

A Redis restarted empty reloads every account from SQL, and the loader restores the
account's keys then (sync.loader.recent_idempotency_keys). A Redis restarted from an
append-only file that lost its last second keeps its wallets, so nothing reloads: the flush
finds the entries SQL has beyond what Redis remembers (sync.flush's gap check) and hands
them here, so a retry of one of those requests is answered from SQL instead of applied again.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import Engine, select

from meter import Meter, bounds
from sync.models import T_LEDGER

LOST_IDS_PER_QUERY_MAX = 500  # ids per IN (...) list: well inside every backend's limit


def restore_lost_keys(meter: Meter, engine: Engine, entry_ids: list[str]) -> int:
    """Restores the idempotency keys of these ledger entries -> how many keys were written."""
    ttl_ms = bounds.IDEMPOTENCY_TTL_S * 1000
    used: dict[str, dict[str, int]] = defaultdict(dict)
    with engine.connect() as conn:
        for start in range(0, len(entry_ids), LOST_IDS_PER_QUERY_MAX):
            chunk = entry_ids[start : start + LOST_IDS_PER_QUERY_MAX]
            rows = conn.execute(
                select(
                    T_LEDGER.c.account_id, T_LEDGER.c.idempotency_key, T_LEDGER.c.created_at_ms
                ).where(
                    T_LEDGER.c.id.in_(chunk),
                    T_LEDGER.c.idempotency_key.is_not(None),
                    T_LEDGER.c.idempotency_key != T_LEDGER.c.id,
                )
            )
            for account_id, key, at_ms in rows:
                expires_ms = int(at_ms) + ttl_ms
                used[account_id][key] = max(expires_ms, used[account_id].get(key, 0))
    return sum(
        int(meter.restore_idempotency(account_id, tuple(by_key.items())))
        for account_id, by_key in used.items()
    )
