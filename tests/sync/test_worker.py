"""`creditmeter worker` end to end: traffic triggers the flush (well within a second), an
idle system runs no flush jobs but the periodic safety one, expiry sweeps run by cron."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from rq import Queue
from rq.job import Job
from rq.registry import FinishedJobRegistry, StartedJobRegistry
from sqlalchemy import Engine, func, select

from meter import Meter, Tool
from meter.keys import Keys
from sync import limits
from sync.models import T_HOLDS, T_LEDGER
from sync.queues import FLUSH_JOB, SYNC, queue_name
from sync.status import sync_status
from tests.sync.conftest import account
from tests.sync.invariants import assert_in_sync

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 20


@pytest.fixture
def worker_proc(
    redis_url: str, sql_url: str, keys: Keys, tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "CREDITMETER_REDIS_URL": redis_url,
        "CREDITMETER_DATABASE_URL": sql_url,
        "CREDITMETER_KEY_PREFIX": keys.prefix,
        "CREDITMETER_BUCKETS": str(keys.buckets),
        "PYTHONPATH": str(REPO),
    }
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "creditmeter"), "worker"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _ledger_rows(engine: Engine, account_id: str) -> int:
    with engine.connect() as conn:
        return conn.execute(
            select(func.count()).where(T_LEDGER.c.account_id == account_id)
        ).scalar_one()


def _wait(cond, timeout_s: float, what: str) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while not cond():
        assert time.monotonic() - start < timeout_s, f"timed out waiting for {what}"
        time.sleep(0.01)
    return time.monotonic() - start


def _finished_flushes(client: redis.Redis, keys: Keys) -> int:
    """Flush jobs run so far (the registry also holds the cron's sweeps)."""
    ids = FinishedJobRegistry(queue_name(keys, SYNC), connection=client).get_job_ids()
    jobs = Job.fetch_many(ids, connection=client)
    return sum(1 for j in jobs if j is not None and j.func_name == FLUSH_JOB)


def _wait_no_jobs(client: redis.Redis, keys: Keys) -> None:
    sync_q = queue_name(keys, SYNC)
    _wait(
        lambda: (
            Queue(sync_q, connection=client).count == 0
            and StartedJobRegistry(sync_q, connection=client).count == 0
        ),
        10,
        "the queued and running jobs to end",
    )


@pytest.mark.slow
def test_traffic_triggers_the_flush_and_idle_costs_nothing(
    worker_proc: subprocess.Popen[bytes],
    meter: Meter,
    client: redis.Redis,
    engine: Engine,
    keys: Keys,
    tool: Tool,
) -> None:
    a = account()
    meter.grant(a, "credits", 100, category="paid")
    _wait(lambda: _ledger_rows(engine, a) == 1, START_TIMEOUT_S, "the worker to start")
    lags = []
    for i in range(5):
        meter.charge(a, tool.name)
        lags.append(_wait(lambda i=i: _ledger_rows(engine, a) == 2 + i, 5, "a flush"))
    # SPEC: in SQL within about a second (measured ~65 ms idle); a loaded host delays some.
    assert sorted(lags)[len(lags) // 2] < 1.0, lags
    assert max(lags) < 3.0, lags
    # Idle: the trigger blocks on the journals. Once the jobs of the charges are done, 3 s
    # see at most the periodic safety flush (every 10 s); polling would show a job per poll.
    _wait_no_jobs(client, keys)
    jobs_before = _finished_flushes(client, keys)
    time.sleep(3)
    assert _finished_flushes(client, keys) - jobs_before <= 1
    assert Queue(queue_name(keys, SYNC), connection=client).count == 0
    assert sync_status(client, engine, keys).unflushed_total == 0
    assert_in_sync(client, engine, keys)


@pytest.mark.slow
def test_cron_sweep_journals_expiry_of_untouched_holds(
    worker_proc: subprocess.Popen[bytes],
    meter: Meter,
    engine: Engine,
    tool: Tool,
) -> None:
    a = account()
    meter.grant(a, "credits", 100, category="paid")
    meter.hold(a, tool.name, amount=10, ttl_s=1)
    hold_status = T_HOLDS.c.status

    def expired_in_sql() -> bool:
        with engine.connect() as conn:
            return (
                conn.execute(
                    select(hold_status).where(T_HOLDS.c.account_id == a)
                ).scalar_one_or_none()
                == "expired"
            )

    # Nobody touches the wallet again: only the periodic sweep can expire the hold.
    _wait(expired_in_sql, START_TIMEOUT_S, "the sweep to expire the hold")


@pytest.mark.slow
def test_periodic_safety_flush_catches_what_no_trigger_announced(
    worker_proc: subprocess.Popen[bytes],
    meter: Meter,
    client: redis.Redis,
    engine: Engine,
    tool: Tool,
    keys: Keys,
) -> None:
    a = account()
    meter.grant(a, "credits", 10, category="paid")
    _wait(lambda: _ledger_rows(engine, a) == 1, START_TIMEOUT_S, "the worker to start")
    _wait_no_jobs(client, keys)  # no running flush job may pick the charge up
    # Traffic triggers held back, as during the SQL-down back-off: only cron can flush.
    client.set(keys.flush_trigger(), "held", px=60_000)
    meter.charge(a, tool.name)
    _wait(
        lambda: _ledger_rows(engine, a) == 2,
        limits.FLUSH_SAFETY_INTERVAL_S + 5,
        "the periodic safety flush",
    )
