"""RQ jobs of the stripe queue: pay one auto top-up attempt (sync/topups.py), and the
sweep that enqueues again the attempts left pending.

The payment job raises only while Stripe is unreachable (or not configured): RQ retries it
with backoff (sync.queues), and the attempt's idempotency key makes every retry one payment.
The trigger's cron runs `sweep_pending` every TOPUP_SWEEP_INTERVAL_S.
"""

from __future__ import annotations

import logging
from typing import Final

from meter.times import now_ms
from sync import stripe_api, topups
from sync.context import context
from worker.stripe_jobs import purchases_for

log = logging.getLogger(__name__)
TOPUP_SWEEP_INTERVAL_S: Final = 60  # as often as an attempt may wait before it is rescued


def run_topup(attempt_id: str) -> str:
    ctx = context()
    client = stripe_api.client_for(ctx.settings)
    outcome = topups.run_attempt(ctx.engine, client, purchases_for(ctx), attempt_id)
    log.info("top-up %s: %s", attempt_id, outcome)
    return outcome


def sweep_pending() -> int:
    """Enqueues again the top-ups left pending (sync.topups.rescue_pending) -> how many."""
    ctx = context()
    rescued = topups.rescue_pending(
        ctx.engine, now_ms(), queue_redis=ctx.queue_redis, keys=ctx.keys
    )
    if rescued:
        log.warning("top-ups left pending, enqueued again: %s", rescued)
    return len(rescued)
