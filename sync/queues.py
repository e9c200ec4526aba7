"""RQ queue names and how sync work is enqueued (deduplicated, so bursts share one job).

The contract between the processes that enqueue (the API, the trigger) and the worker that
runs the jobs: it lives in sync/ so the API never imports the worker."""

from __future__ import annotations

from datetime import UTC, datetime

import redis
from rq import Queue, Retry
from rq.job import Job
from rq.registry import FailedJobRegistry
from sqlalchemy import Engine

from meter.keys import Keys
from sync import limits
from sync.status import SyncStatus, sync_status

SYNC = "sync"  # journal flushes and expiry sweeps
STRIPE = "stripe"  # Stripe events (purchases)
WEBHOOKS = "webhooks"  # outgoing webhook deliveries (sync/webhooks_send.py)
FLUSH_JOB = "worker.jobs.flush_journal"
SWEEP_JOB = "worker.jobs.sweep_expiry"
STRIPE_EVENT_JOB = "worker.stripe_jobs.process_event"
ROLLOVER_JOB = "worker.stripe_jobs.apply_rollover"
TOPUP_JOB = "worker.topup_jobs.run_topup"
WEBHOOK_DELIVERY_JOB = "worker.webhook_jobs.deliver"
WEBHOOK_SWEEP_JOB = "worker.webhook_jobs.sweep_due"
WEBHOOK_JOB_TIMEOUT_S = 60  # one POST (10 s timeout) and two short SQL transactions
WEBHOOK_JOB_RESULT_TTL_S = 600  # a finished job's id blocks a duplicate of that attempt
# Kept while a flush job is queued (deleted when it starts); also set longer as a back-off
# when SQL is down, so traffic re-triggers about once per back-off instead of per entry.
TRIGGER_TTL_MS = 30_000  # a queued job lost with its queue frees the trigger after this
SQL_DOWN_BACKOFF_MS = 1_000


def queue_name(keys: Keys, kind: str) -> str:
    """Queues are per key prefix, so deployments (and tests) sharing a Redis stay apart."""
    return f"creditmeter-{keys.prefix}-{kind}"


def queue_names(keys: Keys) -> list[str]:
    return [queue_name(keys, SYNC), queue_name(keys, STRIPE), queue_name(keys, WEBHOOKS)]


def sync_queue(queue_redis: redis.Redis, keys: Keys) -> Queue:
    return Queue(queue_name(keys, SYNC), connection=queue_redis)


def request_flush(queue_redis: redis.Redis, client: redis.Redis, keys: Keys) -> bool:
    """Enqueues one flush job unless one is already waiting; True if it enqueued."""
    if not client.set(keys.flush_trigger(), "1", nx=True, px=TRIGGER_TTL_MS):
        return False
    sync_queue(queue_redis, keys).enqueue(
        FLUSH_JOB,
        job_timeout=limits.JOB_TIMEOUT_S,
        failure_ttl=limits.FAILED_JOB_TTL_S,
        result_ttl=60,
    )
    return True


def stripe_queue(queue_redis: redis.Redis, keys: Keys) -> Queue:
    return Queue(queue_name(keys, STRIPE), connection=queue_redis)


def _stripe_retry() -> Retry:
    return Retry(max=limits.STRIPE_JOB_RETRIES, interval=list(limits.STRIPE_RETRY_INTERVALS_S))


def enqueue_stripe_event(queue_redis: redis.Redis, keys: Keys, event_id: str) -> bool:
    """One job per stored event (its id names the job), retried with backoff; False when
    that job already exists (queued, running, scheduled for a retry or failed)."""
    job_id = f"stripe-event-{keys.prefix}-{event_id}"
    if Job.exists(job_id, connection=queue_redis):
        return False
    stripe_queue(queue_redis, keys).enqueue(
        STRIPE_EVENT_JOB,
        event_id,
        job_id=job_id,
        retry=_stripe_retry(),
        job_timeout=limits.JOB_TIMEOUT_S,
        failure_ttl=limits.FAILED_JOB_TTL_S,
    )
    return True


def schedule_rollover(queue_redis: redis.Redis, keys: Keys, purchase_id: str, at_ms: int) -> None:
    """Runs the rollover into `purchase_id` once the previous period has ended (the worker's
    scheduler moves the job to the queue then)."""
    when = datetime.fromtimestamp(at_ms / 1000 + limits.STRIPE_ROLLOVER_DELAY_S, UTC)
    stripe_queue(queue_redis, keys).enqueue_at(
        when,
        ROLLOVER_JOB,
        purchase_id,
        job_id=f"stripe-rollover-{keys.prefix}-{purchase_id}",
        retry=_stripe_retry(),
        job_timeout=limits.JOB_TIMEOUT_S,
        failure_ttl=limits.FAILED_JOB_TTL_S,
    )


def _alive(queue_redis: redis.Redis, job_id: str) -> bool:
    """Whether the job of this id is waiting, running or scheduled; one that ended is
    deleted, so its id can name a new job."""
    if not Job.exists(job_id, connection=queue_redis):
        return False
    job = Job.fetch(job_id, connection=queue_redis)
    if not (job.is_finished or job.is_failed or job.is_stopped or job.is_canceled):
        return True
    job.delete()
    return False


def enqueue_topup(queue_redis: redis.Redis, keys: Keys, attempt_id: str) -> bool:
    """One job per top-up attempt (its id names the job) on the stripe queue, retried with
    backoff while Stripe is unreachable; False when that job is waiting, running or
    scheduled. A job that ended with its attempt still pending (its retries ran out) is
    replaced: the attempt's idempotency key makes Stripe answer a second run as the first."""
    job_id = f"topup-{keys.prefix}-{attempt_id}"
    if _alive(queue_redis, job_id):
        return False
    stripe_queue(queue_redis, keys).enqueue(
        TOPUP_JOB,
        attempt_id,
        job_id=job_id,
        retry=_stripe_retry(),
        job_timeout=limits.JOB_TIMEOUT_S,
        failure_ttl=limits.FAILED_JOB_TTL_S,
    )
    return True


def webhooks_queue(queue_redis: redis.Redis, keys: Keys) -> Queue:
    return Queue(queue_name(keys, WEBHOOKS), connection=queue_redis)


def enqueue_webhook_delivery(
    queue_redis: redis.Redis, keys: Keys, delivery_id: str, attempts: int
) -> bool:
    """One job per attempt of a delivery (the id names both), so a sweep that runs again
    before the job did adds nothing; False when that job is waiting or running. A job that
    ended without recording the attempt (it raised, its worker died) is replaced: the job
    claims the delivery in SQL before sending, so a replacement never sends twice."""
    job_id = f"webhook-{keys.prefix}-{delivery_id}-{attempts}"
    if _alive(queue_redis, job_id):
        return False
    webhooks_queue(queue_redis, keys).enqueue(
        WEBHOOK_DELIVERY_JOB,
        delivery_id,
        job_id=job_id,
        job_timeout=WEBHOOK_JOB_TIMEOUT_S,
        result_ttl=WEBHOOK_JOB_RESULT_TTL_S,
        failure_ttl=limits.FAILED_JOB_TTL_S,
    )
    return True


def queue_depths(queue_redis: redis.Redis, keys: Keys) -> dict[str, int]:
    return {name: Queue(name, connection=queue_redis).count for name in queue_names(keys)}


def failed_jobs(queue_redis: redis.Redis, keys: Keys) -> int:
    return sum(FailedJobRegistry(name, connection=queue_redis).count for name in queue_names(keys))


def sync_status_with_queues(
    queue_redis: redis.Redis, client: redis.Redis, engine: Engine, keys: Keys
) -> SyncStatus:
    """The whole sync status: journal lag (sync/) plus this deployment's queues and failures."""
    return sync_status(
        client, engine, keys, queue_depths(queue_redis, keys), failed_jobs(queue_redis, keys)
    )
