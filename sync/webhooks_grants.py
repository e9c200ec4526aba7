"""The `grant.expiring` producer: a periodic scan of SQL grants that still hold credits and
expire within GRANT_EXPIRING_NOTICE_DAYS, emitting one event per grant (dedupe_key
"<grant id>:expiring", so a grant seen by many scans, or by two workers, is announced once).

SQL's grants are the flushed view: a grant spent in Redis but not yet flushed may still be
announced with its last flushed remainder; the event says when it expires, which is exact.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import Engine, select
from sqlalchemy.engine import Connection

from meter.times import rfc3339
from sync.db import write_transaction
from sync.models import T_GRANTS, T_WEBHOOK_EVENTS
from sync.webhooks import emit, subscribed_types

EVENT = "grant.expiring"
GRANT_EXPIRING_NOTICE_DAYS: Final = 3  # how long before expiry: time to top up or use them
GRANT_EXPIRING_SCAN_INTERVAL_S: Final = 300  # a notice days ahead may come minutes late
GRANT_SCAN_BATCH_MAX: Final = 1_000  # grants announced per scan; the next scan goes on
DAY_MS: Final = 86_400_000


def dedupe_key(grant_id: str) -> str:
    return f"{grant_id}:expiring"


def emit_expiring_grants(
    engine: Engine, now_ms: int, notice_days: int = GRANT_EXPIRING_NOTICE_DAYS
) -> int:
    """Emits grant.expiring for grants with credits left expiring within `notice_days` and
    not announced yet; returns how many. Nothing is scanned while no endpoint listens."""
    g, e = T_GRANTS, T_WEBHOOK_EVENTS
    announced = e.c.dedupe_key == g.c.id + ":expiring"
    q = (
        select(g.c.id, g.c.account_id, g.c.credit_type, g.c.remaining, g.c.expires_at_ms)
        .select_from(g.outerjoin(e, announced))
        .where(
            g.c.remaining > 0,
            g.c.expires_at_ms > now_ms,
            g.c.expires_at_ms <= now_ms + notice_days * DAY_MS,
            e.c.id.is_(None),
        )
        .order_by(g.c.expires_at_ms, g.c.id)
        .limit(GRANT_SCAN_BATCH_MAX)
    )

    def scan(conn: Connection) -> int:
        if EVENT not in subscribed_types(conn):
            return 0
        emitted = 0
        for row in conn.execute(q).all():
            payload = {
                "grant_id": row.id,
                "credit_type": row.credit_type,
                "remaining": row.remaining,
                "expires_at": rfc3339(row.expires_at_ms),
            }
            if emit(conn, EVENT, row.account_id, payload, dedupe_key(row.id), now_ms=now_ms):
                emitted += 1
        return emitted

    return write_transaction(engine, scan)
