"""The worker's trigger loop: flushes follow traffic, and rq's cron runs the periodic jobs.

It blocks on every bucket journal (XREAD BLOCK), so an idle system costs nothing; when
entries arrive it enqueues one flush job (deduplicated), waits a short debounce so a burst
shares the job, and blocks again from the journals' newest ids. Between reads it lets the
rq CronScheduler enqueue the safety flush and the expiry sweep.
"""

from __future__ import annotations

import logging
import signal
import time

import redis
from rq.cron import CronScheduler

from meter.keys import Keys
from meter.ops import as_text
from sync import limits
from sync.context import context
from worker import jobs
from worker.queues import SYNC, queue_name, request_flush

log = logging.getLogger(__name__)


def newest_ids(client: redis.Redis, journals: list[str]) -> dict[str, str]:
    pipe = client.pipeline(transaction=False)
    for j in journals:
        pipe.xrevrange(j, count=1)
    return {
        j: (as_text(r[0][0]) if r else "0-0") for j, r in zip(journals, pipe.execute(), strict=True)
    }


def make_cron(queue_redis: redis.Redis, keys: Keys) -> CronScheduler:
    cron = CronScheduler(connection=queue_redis, name=f"creditmeter-cron-{time.time_ns()}")
    cron.register(
        jobs.flush_journal,
        queue_name(keys, SYNC),
        interval=limits.FLUSH_SAFETY_INTERVAL_S,
        job_timeout=limits.JOB_TIMEOUT_S,
        failure_ttl=limits.FAILED_JOB_TTL_S,
    )
    cron.register(
        jobs.sweep_expiry,
        queue_name(keys, SYNC),
        interval=limits.SWEEP_INTERVAL_S,
        job_timeout=limits.JOB_TIMEOUT_S,
        failure_ttl=limits.FAILED_JOB_TTL_S,
    )
    return cron


def run() -> None:
    """Runs until SIGTERM/SIGINT."""
    stop = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    ctx = context()
    journals = [ctx.keys.journal(b) for b in ctx.keys.all_buckets()]
    cron = make_cron(ctx.queue_redis, ctx.keys)
    cron.register_birth()
    request_flush(ctx.queue_redis, ctx.redis, ctx.keys)  # whatever waited while we were down
    last = newest_ids(ctx.redis, journals)
    try:
        while not stop:
            if cron.enqueue_jobs():
                cron.save()
            cron.heartbeat()
            try:
                got = ctx.redis.xread(last, count=1, block=limits.TRIGGER_BLOCK_MS)
            except redis.ConnectionError:
                log.warning("trigger: Redis unreachable; retrying")
                time.sleep(1)
                continue
            if not got:
                continue
            request_flush(ctx.queue_redis, ctx.redis, ctx.keys)
            time.sleep(limits.FLUSH_TRIGGER_DEBOUNCE_MS / 1000)
            last = newest_ids(ctx.redis, journals)
    finally:
        cron.register_death()
