"""The webhooks queue's jobs on real Redis and SQL: the cron schedules the due sweep and the
grant.expiring scan; a sweep enqueues one job per due delivery (a second sweep adds none);
rq runs them and a loopback receiver verifies what it gets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from rq import Queue, SimpleWorker
from sqlalchemy import Engine

from meter.keys import Keys
from sync.context import context
from sync.db import write_transaction
from sync.queues import WEBHOOKS, queue_name
from sync.settings import get_settings
from sync.webhooks import create_endpoint, delete_endpoint, emit
from sync.webhooks_deliveries import list_deliveries
from tests.sync.conftest import account
from tests.sync.webhook_receiver import Receiver, delete_all_endpoints
from worker import webhook_jobs
from worker.trigger import make_cron


@pytest.fixture
def job_context(
    redis_url: str, sql_url: str, keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """The settings the jobs read (context() of this process) point at the test's Redis,
    SQL and key prefix."""
    for name, value in {
        "CREDITMETER_REDIS_URL": redis_url,
        "CREDITMETER_DATABASE_URL": sql_url,
        "CREDITMETER_KEY_PREFIX": keys.prefix,
        "CREDITMETER_BUCKETS": str(keys.buckets),
        "CREDITMETER_DATA_DIR": str(tmp_path),
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    context(get_settings())
    yield
    get_settings.cache_clear()


@pytest.fixture
def receiver(engine: Engine) -> Iterator[tuple[str, Receiver]]:
    delete_all_endpoints(engine)
    r = Receiver(port=0).start()
    endpoint, r.secret = create_endpoint(engine, "test", r.url, ["balance.depleted"])
    yield endpoint.id, r
    r.stop()
    delete_endpoint(engine, "test", endpoint.id)


def test_the_cron_schedules_the_sweep_and_the_scan_on_the_webhooks_queue(
    client: redis.Redis, keys: Keys
) -> None:
    cron = make_cron(client, keys)
    mine = {j.func: j.queue_name for j in cron.get_jobs()}
    assert mine[webhook_jobs.sweep_due] == queue_name(keys, WEBHOOKS)
    assert mine[webhook_jobs.scan_expiring_grants] == queue_name(keys, WEBHOOKS)


def test_a_sweep_enqueues_each_due_delivery_once_and_rq_delivers_them(
    job_context: None,
    client: redis.Redis,
    keys: Keys,
    engine: Engine,
    receiver: tuple[str, Receiver],
) -> None:
    endpoint_id, r = receiver
    accounts = [account(), account()]
    for acct in accounts:
        write_transaction(
            engine,
            lambda conn, acct=acct: emit(conn, "balance.depleted", acct, {}, f"{acct}:depleted"),
        )
    queue = Queue(queue_name(keys, WEBHOOKS), connection=client)

    assert webhook_jobs.sweep_due() >= 2
    queued = queue.count
    assert webhook_jobs.sweep_due() == 0  # the jobs are waiting: nothing twice
    assert queue.count == queued

    SimpleWorker([queue], connection=client).work(burst=True)

    assert sorted(got.json()["data"]["account_id"] for got in r.received) == sorted(accounts)
    assert all(got.verified for got in r.received)
    statuses = {d.status for d in list_deliveries(engine, endpoint_id=endpoint_id)}
    assert statuses == {"succeeded"}
