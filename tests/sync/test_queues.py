"""Flush requests are deduplicated per burst, and the status counts queued and failed jobs."""

from __future__ import annotations

import redis
from rq import Queue, SimpleWorker
from sqlalchemy import Engine

from meter.keys import Keys
from sync.queues import SYNC, queue_name, request_flush, sync_status_with_queues


def test_a_burst_of_flush_requests_enqueues_one_job(client: redis.Redis, keys: Keys) -> None:
    assert request_flush(client, client, keys)
    assert not request_flush(client, client, keys)  # the queued job will see these entries
    assert Queue(queue_name(keys, SYNC), connection=client).count == 1
    client.delete(keys.flush_trigger())  # what the job does when it starts
    assert request_flush(client, client, keys)


def test_status_counts_queued_and_failed_jobs(
    client: redis.Redis, engine: Engine, keys: Keys
) -> None:
    name = queue_name(keys, SYNC)
    queue = Queue(name, connection=client)
    queue.enqueue("worker.jobs.no_such_job", failure_ttl=60)
    status = sync_status_with_queues(client, client, engine, keys)
    assert status.queues[name] == 1 and status.failed_jobs == 0
    SimpleWorker([queue], connection=client).work(burst=True)
    status = sync_status_with_queues(client, client, engine, keys)
    assert status.queues[name] == 0 and status.failed_jobs == 1
