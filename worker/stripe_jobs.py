"""RQ jobs of the stripe queue: apply one stored Stripe event, or a plan's rollover.

A job that raises is retried with backoff (sync.queues); the event's row in
`stripe_events` says what the last attempt did, so `GET /v1/status/sync` and the admin see
failures, and `creditmeter stripe replay EVENT_ID` runs one again by hand.
"""

from __future__ import annotations

import logging

from rq import get_current_job

from sync import topups
from sync.context import SyncContext, context
from sync.flush import Flusher
from sync.purchases import (
    CHECKOUT_EVENTS,
    EventError,
    Ignored,
    NotReady,
    Purchases,
    load_event,
    mark_event,
)
from sync.queues import schedule_rollover

log = logging.getLogger(__name__)


def purchases_for(ctx: SyncContext) -> Purchases:
    flusher = Flusher(ctx.redis, ctx.engine, ctx.keys)
    return Purchases(ctx.engine, ctx.meter(), flush_bucket=flusher.flush_bucket)


def apply_stored_event(ctx: SyncContext, event_id: str) -> str:
    """Applies one stored event once more (what the job and `stripe replay` run)."""
    event = load_event(ctx.engine, event_id)
    if event is None:
        raise EventError(f"event {event_id} was never received")
    try:
        outcome, rollover = purchases_for(ctx).apply(event)
        if event.get("type") in CHECKOUT_EVENTS:
            # An opted-in account's card, for its auto top-ups (after the grant: a retry of
            # a Stripe outage here applies the event again, which grants nothing twice).
            topups.save_checkout_card(ctx.engine, ctx.settings, event["data"]["object"])
    except NotReady as exc:
        job = get_current_job()
        retries_left = (job.retries_left or 0) if job is not None else 0
        mark_event(ctx.engine, event_id, "retrying" if retries_left else "failed", str(exc))
        raise
    except Exception as exc:
        mark_event(ctx.engine, event_id, "failed", f"{type(exc).__name__}: {exc}")
        raise
    if rollover is not None:
        schedule_rollover(ctx.queue_redis, ctx.keys, rollover.purchase_id, rollover.at_ms)
    mark_event(ctx.engine, event_id, "ignored" if isinstance(outcome, Ignored) else "applied")
    log.info("stripe event %s (%s): %s", event_id, event.get("type"), outcome)
    return outcome


def process_event(event_id: str) -> str:
    """The job: an event that lacks what its type needs is marked failed and not retried
    (no retry can mend it; `stripe replay` can after a fix); every other failure retries."""
    try:
        return apply_stored_event(context(), event_id)
    except EventError as exc:
        log.error("stripe event %s cannot be applied: %s", event_id, exc)
        return f"failed: {exc}"


def apply_rollover(purchase_id: str) -> str:
    return purchases_for(context()).rollover(purchase_id)
