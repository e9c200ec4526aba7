"""`creditmeter worker`: the RQ worker and the trigger loop, each a child of a supervisor.

The parent holds no connection: it forks the RQ worker (with rq's scheduler) and the
trigger loop (worker/trigger.py), restarts either one that dies (worker/supervisor.py) and
passes SIGTERM/SIGINT on. Each child also outlives a Redis outage by itself: rq's work loop
quits on an error it does not expect (a lost connection mid-job, an OOM answer), so the RQ
child starts it again after a bounded backoff; the trigger loop backs off and rebuilds.

Jobs run in RQ's forked work-horse, so a job killed mid-flush leaves its entries pending
in the journal, where the next flush reclaims them. `--burst` enqueues one flush and one
sweep, works the queues until empty and exits (for cron-style deployments and tests).
"""

from __future__ import annotations

import logging
import signal
import threading
import time

import redis
from redis.client import PubSub, PubSubWorkerThread
from rq import Queue, Worker
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.scheduler import RQScheduler

from sync import limits
from sync.context import context
from sync.queues import (
    SWEEP_JOB,
    WEBHOOK_SWEEP_JOB,
    queue_names,
    request_flush,
    sync_queue,
    webhooks_queue,
)
from sync.settings import Settings, get_settings
from worker import jobs, logs, stripe_jobs, trigger, webhook_jobs  # noqa: F401  jobs: imported before forking, so each work-horse starts warm
from worker.supervisor import (
    CHILD_HEALTHY_S,
    REDIS_RETRY_DELAY_FIRST_S,
    REDIS_RETRY_DELAY_MAX_S,
    Backoff,
    Child,
    supervise,
)

log = logging.getLogger(__name__)

RQ_WORKER_TTL_S = 45  # rq heartbeats, and an idle dequeue blocks, for this minus 15 s
RQ_MAINTENANCE_INTERVAL_S = 30  # rq restarts a dead scheduler (retries, rollovers) this often


class _Scheduler(RQScheduler):
    """rq's scheduler (scheduled jobs: retries, rollovers), whose process outlives a Redis
    error: rq's own quits on one, and its lock then blocks a new one for a minute."""

    def work(self) -> None:
        delays = Backoff(REDIS_RETRY_DELAY_FIRST_S, REDIS_RETRY_DELAY_MAX_S)
        while True:
            try:
                super().work()  # returns once a stop was requested
                return
            except redis.RedisError as exc:
                delay_s = delays.next_s()
                log.warning(
                    "rq scheduler: Redis error (%s: %s); retrying in %.2f s",
                    type(exc).__name__,
                    exc,
                    delay_s,
                )
                time.sleep(delay_s)


class _Worker(Worker):
    # rq's idle dequeue retries a lost connection with a doubling wait capped at 60 s: cap
    # it like every other reconnect here.
    max_connection_wait_time = REDIS_RETRY_DELAY_MAX_S
    stop_event: threading.Event | None = None  # set by a signal that came before rq's handlers

    def _start_scheduler(
        self,
        burst: bool = False,
        logging_level: str | None = "INFO",
        date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
        log_format: str = DEFAULT_LOGGING_FORMAT,
    ) -> None:
        """rq's, with our scheduler class (this worker never runs in burst mode)."""
        assert not burst
        self.scheduler = _Scheduler(
            self.queues,
            connection=self.connection,
            logging_level=logging_level if logging_level is not None else self.log.level,
            date_format=date_format,
            log_format=log_format,
            serializer=self.serializer,
        )
        self.scheduler.acquire_locks()
        if self.scheduler.acquired_locks:
            self.scheduler.start()

    def _pubsub_exception_handler(
        self, exc: Exception, pubsub: PubSub, pubsub_thread: PubSubWorkerThread
    ) -> None:
        """rq's, but waiting REDIS_RETRY_DELAY_MAX_S instead of 2 s after a lost connection:
        ending the work loop joins this thread, so its wait delays the restart."""
        if not isinstance(exc, redis.exceptions.ConnectionError):
            super()._pubsub_exception_handler(exc, pubsub, pubsub_thread)
            return
        log.warning("rq worker: pub/sub connection lost (%s)", exc)
        time.sleep(REDIS_RETRY_DELAY_MAX_S)

    def _install_signal_handlers(self) -> None:
        super()._install_signal_handlers()
        if self.stop_event is not None and self.stop_event.is_set():
            self._stop_requested = True  # the work loop stops at its first turn


def _new_worker(settings: Settings, stop_event: threading.Event) -> _Worker:
    ctx = context(settings)
    queues = [Queue(q, connection=ctx.queue_redis) for q in queue_names(ctx.keys)]
    worker = _Worker(
        queues,
        connection=ctx.queue_redis,
        worker_ttl=RQ_WORKER_TTL_S,
        maintenance_interval=RQ_MAINTENANCE_INTERVAL_S,
    )
    worker.stop_event = stop_event
    return worker


def run_rq_worker(settings: Settings) -> None:
    """rq's work loop (with its scheduler), started again after anything ended it but a stop
    request: rq logs the error that made it quit; a Redis error raised out of it (its
    teardown, its start) gets one line here."""
    stop = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    delays = Backoff(REDIS_RETRY_DELAY_FIRST_S, REDIS_RETRY_DELAY_MAX_S)
    while not stop.is_set():
        worker: Worker | None = None
        started_s = time.monotonic()
        try:
            worker = _new_worker(settings, stop)
            worker.work(with_scheduler=True)
        except redis.RedisError as exc:
            log.warning("rq worker: Redis error (%s: %s)", type(exc).__name__, exc)
        finally:
            # rq's handlers act on the worker that just ended: from here on, ours.
            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
        if stop.is_set() or (worker is not None and worker._shutdown_requested_date is not None):
            return
        if time.monotonic() - started_s >= CHILD_HEALTHY_S:
            delays.reset()
        delay_s = delays.next_s()
        log.warning("rq worker: work loop ended; starting it again in %.2f s", delay_s)
        time.sleep(delay_s)


def run(settings: Settings | None = None, *, burst: bool = False) -> bool:
    """Works until stopped (or, in burst mode, until the queues are empty)."""
    settings = settings or get_settings()
    if burst:
        ctx = context(settings)
        queues = [Queue(q, connection=ctx.queue_redis) for q in queue_names(ctx.keys)]
        ctx.redis.delete(ctx.keys.flush_trigger())
        request_flush(ctx.queue_redis, ctx.redis, ctx.keys)
        sync_queue(ctx.queue_redis, ctx.keys).enqueue(SWEEP_JOB, job_timeout=limits.JOB_TIMEOUT_S)
        webhooks_queue(ctx.queue_redis, ctx.keys).enqueue(
            WEBHOOK_SWEEP_JOB, job_timeout=limits.JOB_TIMEOUT_S
        )
        return bool(Worker(queues, connection=ctx.queue_redis).work(burst=True))
    logs.configure()
    supervise(
        [
            Child("creditmeter-rq", lambda: run_rq_worker(settings)),
            Child("creditmeter-trigger", lambda: trigger.run(settings)),
        ]
    )
    return True
