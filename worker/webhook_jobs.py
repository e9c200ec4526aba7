"""RQ jobs of the webhooks queue: the due sweep, one delivery attempt, the grant.expiring scan.

The trigger's cron runs `sweep_due` every WEBHOOK_SWEEP_INTERVAL_S and `scan_expiring_grants`
every GRANT_EXPIRING_SCAN_INTERVAL_S; the sweep enqueues one `deliver` job per due delivery.
Each job is safe to run twice: a delivery is claimed in SQL before it is sent.
"""

from __future__ import annotations

import logging
from typing import Final

from meter.times import now_ms
from sync.context import context
from sync.queues import enqueue_webhook_delivery
from sync.webhooks_grants import emit_expiring_grants
from sync.webhooks_send import deliver as deliver_once
from sync.webhooks_send import due

log = logging.getLogger(__name__)

# The first retry comes 5 s after a failure (sync.webhooks_send.RETRY_DELAYS_S) and a new
# event waits for the next sweep: sweeping more rarely would stretch both.
WEBHOOK_SWEEP_INTERVAL_S: Final = 5


def deliver(delivery_id: str) -> str:
    """One attempt of a due delivery; its status afterwards ("skipped": not due, or another
    job holds it)."""
    done = deliver_once(context().engine, delivery_id, now_ms())
    if done is None:
        return "skipped"
    if done.status != "succeeded":
        log.warning(
            "webhook %s to %s: attempt %d %s (%s)",
            done.id,
            done.url,
            done.attempts,
            done.status,
            done.last_error,
        )
    return done.status


def sweep_due() -> int:
    """Enqueues a delivery job for every due delivery; returns how many it enqueued."""
    ctx = context()
    enqueued = 0
    for delivery_id, attempts in due(ctx.engine, now_ms()):
        if enqueue_webhook_delivery(ctx.queue_redis, ctx.keys, delivery_id, attempts):
            enqueued += 1
    return enqueued


def scan_expiring_grants() -> int:
    """Emits grant.expiring for grants expiring soon (sync/webhooks_grants.py)."""
    emitted = emit_expiring_grants(context().engine, now_ms())
    if emitted:
        log.info("grant.expiring: %d events", emitted)
    return emitted
