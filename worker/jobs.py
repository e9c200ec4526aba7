"""RQ jobs of the sync queue. Each builds its context from CREDITMETER_* settings."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.exc import OperationalError

from meter.ops import now_ms
from sync.context import context
from sync.epoch import check_epoch
from sync.flush import Flusher
from sync.sweep import sweep_expiry as sweep
from worker.queues import SQL_DOWN_BACKOFF_MS

log = logging.getLogger(__name__)


def flush_journal() -> dict[str, Any]:
    """Flushes every bucket until its journal is empty or the job's time budget is spent."""
    ctx = context()
    ctx.redis.delete(ctx.keys.flush_trigger())  # entries from now on trigger a new job
    try:
        check_epoch(ctx.redis, ctx.engine, ctx.keys)
        results = Flusher(ctx.redis, ctx.engine, ctx.keys).drain()
    except OperationalError:
        # SQL is down: hold traffic triggers back a little; the entries wait in Redis.
        ctx.redis.set(ctx.keys.flush_trigger(), "backoff", px=SQL_DOWN_BACKOFF_MS)
        raise
    summary = {
        "entries": sum(r.entries for r in results),
        "ledger_inserted": sum(r.ledger_inserted for r in results),
        "dead_lettered": sum(r.dead_lettered for r in results),
        "buckets": [r.bucket for r in results if r.entries],
    }
    if summary["entries"]:
        log.info("flushed %s", summary)
    return summary


def sweep_expiry() -> dict[str, int]:
    """Journals the expiry of due grants and holds nobody touched."""
    ctx = context()
    r = sweep(ctx.redis, ctx.meter(), ctx.keys, now_ms())
    return {"wallets": r.wallets, "grants": r.grants_expired, "holds": r.holds_expired}
