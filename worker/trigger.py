"""The worker's trigger loop: flushes follow traffic, and rq's cron runs the periodic jobs.

It blocks on every bucket journal (XREAD BLOCK), so an idle system costs nothing; when
entries arrive it enqueues one flush job (deduplicated), waits a short debounce so a burst
shares the job, and blocks again from the journals' newest ids. Between reads it lets the
rq CronScheduler enqueue the safety flush and the expiry sweep.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time

import redis
from rq.cron import CronScheduler

from meter.keys import Keys
from meter.ops import as_text
from meter.redis_conn import is_cluster
from sync import limits
from sync.context import SyncContext, context
from sync.queues import STRIPE, SYNC, WEBHOOKS, queue_name, request_flush
from sync.settings import Settings
from sync.webhooks_grants import GRANT_EXPIRING_SCAN_INTERVAL_S
from worker import jobs, topup_jobs, webhook_jobs
from worker.supervisor import REDIS_RETRY_DELAY_FIRST_S, REDIS_RETRY_DELAY_MAX_S, Backoff

log = logging.getLogger(__name__)

CONSUMER_PRUNE_INTERVAL_S = 600  # consumers are deleted after an hour idle: 10 min late is fine


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
    cron.register(
        jobs.prune_consumers,
        queue_name(keys, SYNC),
        interval=CONSUMER_PRUNE_INTERVAL_S,
        job_timeout=limits.JOB_TIMEOUT_S,
        failure_ttl=limits.FAILED_JOB_TTL_S,
    )
    cron.register(
        webhook_jobs.sweep_due,
        queue_name(keys, WEBHOOKS),
        interval=webhook_jobs.WEBHOOK_SWEEP_INTERVAL_S,
        job_timeout=limits.JOB_TIMEOUT_S,
        failure_ttl=limits.FAILED_JOB_TTL_S,
    )
    cron.register(
        topup_jobs.sweep_pending,
        queue_name(keys, STRIPE),
        interval=topup_jobs.TOPUP_SWEEP_INTERVAL_S,
        job_timeout=limits.JOB_TIMEOUT_S,
        failure_ttl=limits.FAILED_JOB_TTL_S,
    )
    cron.register(
        webhook_jobs.scan_expiring_grants,
        queue_name(keys, WEBHOOKS),
        interval=GRANT_EXPIRING_SCAN_INTERVAL_S,
        job_timeout=limits.JOB_TIMEOUT_S,
        failure_ttl=limits.FAILED_JOB_TTL_S,
    )
    return cron


class _Loop:
    """The trigger on one context: its cron scheduler (made once, so each periodic job keeps
    its schedule through an outage) and the journals' newest ids. After a Redis error it
    starts again from `resume()`: the server may have restarted without any of its keys."""

    def __init__(self, ctx: SyncContext) -> None:
        self.ctx = ctx
        self.journals = [ctx.keys.journal(b) for b in ctx.keys.all_buckets()]
        self.cron = make_cron(ctx.queue_redis, ctx.keys)
        self.last: dict[str, str] | None = None  # None: resume() first

    def resume(self) -> None:
        self.cron.register_birth()
        # Whatever waited while we were down or cut off: a job queued before may be lost,
        # and its trigger key would hold new ones back until it expires.
        self.ctx.redis.delete(self.ctx.keys.flush_trigger())
        request_flush(self.ctx.queue_redis, self.ctx.redis, self.ctx.keys)
        self.last = newest_ids(self.ctx.redis, self.journals)

    def step(self) -> None:
        """Runs due cron jobs, then waits up to TRIGGER_BLOCK_MS for new journal entries."""
        if self.last is None:
            self.resume()
        assert self.last is not None
        if self.cron.enqueue_jobs():
            self.cron.save()
        self.cron.heartbeat()
        if not self._wait_for_entries(self.last):
            return
        request_flush(self.ctx.queue_redis, self.ctx.redis, self.ctx.keys)
        time.sleep(limits.FLUSH_TRIGGER_DEBOUNCE_MS / 1000)
        self.last = newest_ids(self.ctx.redis, self.journals)

    def _wait_for_entries(self, last: dict[str, str]) -> bool:
        """Whether any journal has entries past `last`, waiting a moment for some."""
        if not is_cluster(self.ctx.redis):
            got = self.ctx.redis.xread(last, count=1, block=limits.TRIGGER_BLOCK_MS)  # type: ignore[arg-type]
            return bool(got)
        time.sleep(limits.TRIGGER_POLL_MS / 1000)
        return newest_ids(self.ctx.redis, self.journals) != last

    def close(self) -> None:
        with contextlib.suppress(redis.RedisError):
            self.cron.register_death()


def run(settings: Settings | None = None) -> None:
    """Runs until SIGTERM/SIGINT. Any Redis error (connection lost or refused, LOADING, OOM,
    a fresh server without the streams) costs one log line and a backoff, then the loop
    resumes from fresh state."""
    stop = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    delays = Backoff(REDIS_RETRY_DELAY_FIRST_S, REDIS_RETRY_DELAY_MAX_S)
    loop: _Loop | None = None
    try:
        while not stop:
            try:
                if loop is None:  # the context checks the server: it needs Redis too
                    loop = _Loop(context(settings))
                loop.step()
                delays.reset()
            except redis.RedisError as exc:
                delay_s = delays.next_s()
                log.warning(
                    "trigger: Redis error (%s: %s); retrying in %.2f s",
                    type(exc).__name__,
                    exc,
                    delay_s,
                )
                if loop is not None:
                    loop.last = None
                time.sleep(delay_s)
    finally:
        if loop is not None:
            loop.close()
