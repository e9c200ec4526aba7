"""The worker with the balances on the cluster and RQ's queues on a plain Redis: a burst
flushes every bucket's journal from every master into SQL. A cluster URL for the queues is
refused at start, in one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from pydantic import ValidationError
from sqlalchemy import Engine, func, select

from meter import Meter, NewAccountLoader, Tool
from meter.keys import Keys
from meter.redis_conn import sync_client
from sync.models import T_LEDGER
from sync.settings import Settings
from tests.sync.test_worker import _finished_flushes, _wait_no_jobs

pytestmark = pytest.mark.standalone  # the cluster is the session's own

BUCKETS = 16
ACCOUNTS = 40  # a few per bucket
COST = 2
WORKER_BURST_TIMEOUT_S = 120  # imports, then one flush of a few hundred entries
WORKER_START_S = 60  # the worker's children import rq, SQLAlchemy and redis-py
TRIGGERED_FLUSH_S = 10  # the periodic safety flush catches any charge within this
TRIGGERED_CHARGES = 5  # charges timed one by one, each of another account


def _worker_env(redis_url: str, queue_redis_url: str, sql_url: str, prefix: str) -> dict[str, str]:
    return {
        **os.environ,
        "CREDITMETER_REDIS_URL": redis_url,
        "CREDITMETER_QUEUE_REDIS_URL": queue_redis_url,
        "CREDITMETER_DATABASE_URL": sql_url,
        "CREDITMETER_KEY_PREFIX": prefix,
        "CREDITMETER_BUCKETS": str(BUCKETS),
    }


def _wait(cond, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _charged(engine: Engine, accounts: list[str]) -> int:
    with engine.connect() as conn:
        total = conn.execute(
            select(func.coalesce(func.sum(T_LEDGER.c.amount), 0)).where(
                T_LEDGER.c.account_id.in_(accounts), T_LEDGER.c.kind == "charge"
            )
        ).scalar_one()
    return -int(total)


def test_a_burst_flushes_every_master_into_sql(
    redis_url: str, queue_redis_url: str, sql_url: str, engine: Engine, key_prefix: str
) -> None:
    keys = Keys(prefix=key_prefix, buckets=BUCKETS)
    meter = Meter(sync_client(redis_url), keys=keys, loader=NewAccountLoader())
    meter.set_tools([Tool("GEN", COST, "credits")])
    accounts = [f"{key_prefix}-{i}" for i in range(ACCOUNTS)]
    for a in accounts:
        meter.grant(a, "credits", 100, category="paid")
        meter.charge(a, "GEN", 3)
    meter.redis.close()
    creditmeter = str(Path(sys.executable).parent / "creditmeter")
    done = subprocess.run(
        [creditmeter, "worker", "--burst"],
        env=_worker_env(redis_url, queue_redis_url, sql_url, key_prefix),
        capture_output=True,
        timeout=WORKER_BURST_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert _charged(engine, accounts) == ACCOUNTS * 3 * COST


def test_traffic_on_every_master_triggers_a_flush(
    redis_url: str, queue_redis_url: str, sql_url: str, engine: Engine, key_prefix: str
) -> None:
    keys = Keys(prefix=key_prefix, buckets=BUCKETS)
    meter = Meter(sync_client(redis_url), keys=keys, loader=NewAccountLoader())
    meter.set_tools([Tool("GEN", COST, "credits")])
    accounts = [f"{key_prefix}-{i}" for i in range(ACCOUNTS)]
    creditmeter = str(Path(sys.executable).parent / "creditmeter")
    worker = subprocess.Popen(
        [creditmeter, "worker"],
        env=_worker_env(redis_url, queue_redis_url, sql_url, key_prefix),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        meter.grant(accounts[0], "credits", 100, category="paid")
        meter.charge(accounts[0], "GEN")
        _wait(lambda: _charged(engine, accounts[:1]) == COST, WORKER_START_S, "the worker")
        # As tests/sync/test_worker.py: each charge in SQL within about a second. (A
        # trigger that fails restarts every 5 s, and flushes once as it starts.)
        lags = []
        for n, a in enumerate(accounts[1 : TRIGGERED_CHARGES + 1], start=2):
            meter.grant(a, "credits", 100, category="paid")
            meter.charge(a, "GEN")
            start = time.monotonic()
            _wait(lambda n=n: _charged(engine, accounts) == n * COST, TRIGGERED_FLUSH_S, "a flush")
            lags.append(time.monotonic() - start)
        assert sorted(lags)[len(lags) // 2] < 1.0, lags
        # Idle, the trigger only polls: at most the periodic safety flush runs in 3 s. (A
        # trigger failing and resuming would request a flush at every retry.)
        with redis.Redis.from_url(queue_redis_url) as queues:
            _wait_no_jobs(queues, keys)
            before = _finished_flushes(queues, keys)
            time.sleep(3)
            assert _finished_flushes(queues, keys) - before <= 1
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)
        meter.redis.close()


def test_the_worker_refuses_queues_on_the_cluster_in_one_line(redis_url: str) -> None:
    env = {**os.environ, "CREDITMETER_REDIS_URL": redis_url}
    env.pop("CREDITMETER_QUEUE_REDIS_URL", None)
    creditmeter = str(Path(sys.executable).parent / "creditmeter")
    done = subprocess.run(
        [creditmeter, "worker", "--burst"], env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stderr.decode().strip() == (
        "error: RQ queues cannot live on a Redis Cluster: set CREDITMETER_QUEUE_REDIS_URL "
        "to a plain redis:// URL"
    )


def test_queues_on_a_cluster_url_are_refused(redis_url: str, queue_redis_url: str) -> None:
    with pytest.raises(ValidationError, match="CREDITMETER_QUEUE_REDIS_URL"):
        Settings(redis_url=redis_url)
    with pytest.raises(ValidationError, match="RQ queues cannot live on a Redis Cluster"):
        Settings(redis_url=queue_redis_url, queue_redis_url=redis_url)
    assert Settings(redis_url=redis_url, queue_redis_url=queue_redis_url).queue_redis_url
