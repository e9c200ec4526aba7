"""The worker with the balances on the cluster and RQ's queues on a plain Redis: a burst
flushes every bucket's journal from every master into SQL. A cluster URL for the queues is
refused at start, in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import Engine, func, select

from meter import Meter, NewAccountLoader, Tool
from meter.keys import Keys
from meter.redis_conn import sync_client
from sync.models import T_LEDGER
from sync.settings import Settings

pytestmark = pytest.mark.standalone  # the cluster is the session's own

BUCKETS = 16
ACCOUNTS = 40  # a few per bucket
COST = 2
WORKER_BURST_TIMEOUT_S = 120  # imports, then one flush of a few hundred entries


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
    env = {
        **os.environ,
        "CREDITMETER_REDIS_URL": redis_url,
        "CREDITMETER_QUEUE_REDIS_URL": queue_redis_url,
        "CREDITMETER_DATABASE_URL": sql_url,
        "CREDITMETER_KEY_PREFIX": key_prefix,
        "CREDITMETER_BUCKETS": str(BUCKETS),
    }
    creditmeter = str(Path(sys.executable).parent / "creditmeter")
    done = subprocess.run(
        [creditmeter, "worker", "--burst"],
        env=env,
        capture_output=True,
        timeout=WORKER_BURST_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert _charged(engine, accounts) == ACCOUNTS * 3 * COST


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
