"""RQ job of the stripe queue: pay one auto top-up attempt (sync/topups.py).

The job raises only while Stripe is unreachable (or not configured): RQ retries it with
backoff (sync.queues), and the attempt's idempotency key makes every retry one payment.
"""

from __future__ import annotations

import logging

from sync import stripe_api, topups
from sync.context import context
from worker.stripe_jobs import purchases_for

log = logging.getLogger(__name__)


def run_topup(attempt_id: str) -> str:
    ctx = context()
    client = stripe_api.client_for(ctx.settings)
    outcome = topups.run_attempt(ctx.engine, client, purchases_for(ctx), attempt_id)
    log.info("top-up %s: %s", attempt_id, outcome)
    return outcome
