"""`creditmeter worker`: an RQ worker on the creditmeter queues plus the trigger loop.

Jobs run in RQ's forked work-horse, so a job killed mid-flush leaves its entries pending
in the journal, where the next flush reclaims them. `--burst` enqueues one flush and one
sweep, works the queues until empty and exits (for cron-style deployments and tests).
"""

from __future__ import annotations

import logging
import multiprocessing

import redis
from rq import Queue, Worker

from meter.settings import Settings, get_settings
from sync import limits
from sync.context import context
from worker import jobs, stripe_jobs, trigger  # noqa: F401  jobs: imported before forking, so each work-horse starts warm
from worker.queues import SWEEP_JOB, queue_names, request_flush, sync_queue

log = logging.getLogger(__name__)


def _trigger_main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s trigger %(message)s")
    trigger.run()


def run(settings: Settings | None = None, *, burst: bool = False, name: str | None = None) -> bool:
    """Works until stopped (or, in burst mode, until the queues are empty)."""
    settings = settings or get_settings()
    ctx = context(settings)
    queues = [Queue(q, connection=ctx.queue_redis) for q in queue_names(ctx.keys)]
    worker = Worker(queues, connection=ctx.queue_redis, name=name)
    if burst:
        ctx.redis.delete(ctx.keys.flush_trigger())
        request_flush(ctx.queue_redis, ctx.redis, ctx.keys)
        sync_queue(ctx.queue_redis, ctx.keys).enqueue(SWEEP_JOB, job_timeout=limits.JOB_TIMEOUT_S)
        return bool(worker.work(burst=True, with_scheduler=False))
    proc = multiprocessing.get_context("fork").Process(
        target=_trigger_main, name="creditmeter-trigger", daemon=True
    )
    proc.start()
    try:
        while True:
            try:
                return bool(worker.work(with_scheduler=True))
            except redis.exceptions.NoScriptError:
                # rq's own Lua calls (redis-py Script) retry NOSCRIPT once; a SCRIPT FLUSH
                # can still slip in between. The worker is fine: start its loop again.
                log.warning("rq met a flushed script cache; restarting the work loop")
                worker = Worker(queues, connection=ctx.queue_redis, name=name)
    finally:
        proc.terminate()
        proc.join(5)
