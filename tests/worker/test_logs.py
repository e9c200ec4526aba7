"""An idle `creditmeter worker` stays quiet: rq's per-job INFO lines are left out, its
warnings and errors and our own lines are kept."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from rq.registry import FinishedJobRegistry

from meter.keys import Keys
from sync.queues import SYNC, queue_name
from tests.sql_databases import fresh_database
from worker.logs import QuietRq

REPO = Path(__file__).resolve().parents[2]
WARM_UP_S = 8.0  # start-up lines, and the first flush and sweep
IDLE_S = 22.0  # two safety flushes (every 10 s), four sweeps (every 5 s), one maintenance
# What it may write meanwhile: nothing is expected; before, rq wrote ~240 B/s (~5 KB here).
IDLE_BYTES_MAX = 300


def _record(name: str, level: int) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, "a line", None, None)


def test_rq_info_lines_are_dropped_and_its_warnings_and_errors_and_ours_kept() -> None:
    quiet = QuietRq()
    assert not quiet.filter(_record("rq.worker", logging.INFO))
    assert not quiet.filter(_record("rq.cron", logging.INFO))
    assert quiet.filter(_record("rq.worker", logging.WARNING))
    assert quiet.filter(_record("rq.worker", logging.ERROR))
    assert quiet.filter(_record("worker.jobs", logging.INFO))
    assert quiet.filter(_record("rqlike", logging.INFO))  # only rq's own loggers


@pytest.fixture
def worker_log(redis_url: str, sql_url: str, keys: Keys, tmp_path: Path) -> Iterator[Path]:
    """The log of a worker on an SQL of its own: idle means no other test's rows to work on
    (the top-up rescue sweep would take their pending attempts)."""
    with fresh_database(sql_url, tmp_path, "idle") as own_sql:
        yield from _worker_log(redis_url, own_sql, keys, tmp_path)


def _worker_log(redis_url: str, sql_url: str, keys: Keys, tmp_path: Path) -> Iterator[Path]:
    env = {
        **os.environ,
        "CREDITMETER_REDIS_URL": redis_url,
        "CREDITMETER_DATABASE_URL": sql_url,
        "CREDITMETER_KEY_PREFIX": keys.prefix,
        "CREDITMETER_BUCKETS": str(keys.buckets),
        "PYTHONPATH": str(REPO),
    }
    path = tmp_path / "worker.log"
    with path.open("wb") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "creditmeter"), "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield path
            assert proc.poll() is None, path.read_text()
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_an_idle_worker_writes_almost_nothing_while_its_periodic_jobs_run(
    worker_log: Path, client: redis.Redis, keys: Keys
) -> None:
    finished = FinishedJobRegistry(queue_name(keys, SYNC), connection=client)
    time.sleep(WARM_UP_S)
    size_before, jobs_before = worker_log.stat().st_size, finished.count
    time.sleep(IDLE_S)
    written = worker_log.stat().st_size - size_before
    assert finished.count - jobs_before >= 4, "the periodic flushes and sweeps did not run"
    assert written < IDLE_BYTES_MAX, worker_log.read_text()[-3000:]
