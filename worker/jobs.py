"""RQ jobs of the sync queue. Each builds its context from CREDITMETER_* settings."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import redis
from sqlalchemy.exc import OperationalError

from meter.times import now_ms
from sync.consumers import prune_idle_consumers
from sync.context import context
from sync.epoch import check_epoch
from sync.flush import Flusher
from sync.queues import SQL_DOWN_BACKOFF_MS, enqueue_topup
from sync.sweep import sweep_expiry as sweep

log = logging.getLogger(__name__)


def flush_journal() -> dict[str, Any]:
    """Flushes every bucket until its journal is empty or the job's time budget is spent."""
    ctx = context()
    try:
        ctx.redis.delete(ctx.keys.flush_trigger())  # entries from now on trigger a new job
        check_epoch(ctx.redis, ctx.engine, ctx.keys)
        results = Flusher(ctx.redis, ctx.engine, ctx.keys).drain()
    except OperationalError:
        # SQL is down: hold traffic triggers back a little; the entries wait in Redis.
        with contextlib.suppress(redis.RedisError):
            ctx.redis.set(ctx.keys.flush_trigger(), "backoff", px=SQL_DOWN_BACKOFF_MS)
        raise
    except redis.RedisError as exc:
        # The job fails (the entries wait, pending or unread). Whatever trigger is set now
        # must not hold the next job back: the next entry, or the trigger loop's restart
        # after the outage, enqueues it.
        log.warning("flush: Redis error (%s: %s)", type(exc).__name__, exc)
        with contextlib.suppress(redis.RedisError):
            ctx.redis.delete(ctx.keys.flush_trigger())
        raise
    # After the commit that claimed them; one lost here is rescue_pending's within minutes.
    topups = [aid for r in results for aid in r.topup_attempts]
    for aid in topups:
        enqueue_topup(ctx.queue_redis, ctx.keys, aid)
    summary = {
        "entries": sum(r.entries for r in results),
        "ledger_inserted": sum(r.ledger_inserted for r in results),
        "dead_lettered": sum(r.dead_lettered for r in results),
        "buckets": [r.bucket for r in results if r.entries],
        "topups": len(topups),
    }
    if summary["entries"]:
        log.info("flushed %s", summary)
    return summary


def prune_consumers() -> dict[str, int]:
    """Deletes the journal consumers of finished workers (idle, nothing pending)."""
    ctx = context()
    r = prune_idle_consumers(ctx.redis, ctx.keys)
    if r.deleted:
        log.info("deleted %d idle journal consumers", r.deleted)
    return {"deleted": r.deleted, "kept_pending": r.kept_pending}


def sweep_expiry() -> dict[str, int]:
    """Journals the expiry of due grants and holds nobody touched."""
    ctx = context()
    r = sweep(ctx.redis, ctx.meter(), ctx.keys, now_ms())
    return {"wallets": r.wallets, "grants": r.grants_expired, "holds": r.holds_expired}
