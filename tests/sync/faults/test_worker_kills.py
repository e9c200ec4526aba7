"""Real RQ worker processes killed (or starved of their scripts) at the worst moments: the
journal still reaches SQL exactly once.

Each test runs its own redis-server (it kills processes; the shared Redis is never touched)
and real worker subprocesses (`creditmeter worker`, or a bare rq Worker for a fault job).
Every test ends with the same two checks: the set of journal-written ledger ids of the test's
accounts is exactly the set of changes the meter acknowledged (no loss, no phantom, no
duplicate), and assert_in_sync (Redis == SQL per wallet, snapshot == sum of its ledger).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

import pytest
import redis
from rq import Queue, Worker
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry
from sqlalchemy import Engine, select

from meter import AsyncMeter, Meter, Tool
from meter.embedded import EmbeddedRedis
from meter.keys import Keys
from meter.redis_conn import async_client, sync_client
from sync import limits
from sync.catalog import save_tools
from sync.db import engine_for
from sync.flush import GROUP, Flusher
from sync.loader import SqlLoader
from sync.migrate import upgrade
from sync.models import T_LEDGER
from sync.queues import FLUSH_JOB, SYNC, queue_name
from sync.status import sync_status
from tests.meter.helpers import journal_entries
from tests.servers import private_redis
from tests.sync.invariants import assert_in_sync

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[3]
CREDITMETER = str(Path(sys.executable).parent / "creditmeter")
BUCKETS = 4
GRANT = 10**9  # no charge of these tests ever runs out of credits
LOCK_TTL_S = limits.FLUSH_LOCK_TTL_MS / 1000
DRAIN_TIMEOUT_S = 30.0  # a dead flusher's lock (15 s) plus a safety flush period (10 s)
STOP_TIMEOUT_S = 15.0  # warm shutdown waits for the running job
LOG_TAIL_LINES = 30

# A bare rq worker in burst mode on one queue: works only what the test enqueued, then exits.
RQ_BURST_WORKER = """
import sys
from redis import Redis
from rq import Queue, Worker
conn = Redis.from_url(sys.argv[1])
worker = Worker([Queue(sys.argv[2], connection=conn)], connection=conn)
worker.work(burst=True, with_scheduler=False)
"""


# --- processes --------------------------------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out.setdefault(ppid, []).append(int(entry))
    return out


def _descendants(pid: int) -> list[int]:
    """Every live process below pid. The rq work-horse calls setpgrp(), so it is not in its
    worker's process group: killing the group alone would leave it running."""
    children, out, todo = _children_map(), [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


class WorkerProc:
    def __init__(self, name: str, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.name = name
        self.popen = popen
        self.log = log

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return f"({self.log} not readable)"
        return f"--- {self.name} ({self.log}) ---\n" + "\n".join(text[-lines:])

    def sigkill(self) -> None:
        """SIGKILL the worker, its process group and every descendant (work-horse too)."""
        pids = [self.popen.pid, *_descendants(self.popen.pid)]
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)  # start_new_session: pgid == pid
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)

    def stop(self) -> None:
        """Warm shutdown (SIGTERM: the running job finishes), SIGKILL past the timeout."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=STOP_TIMEOUT_S)
        self.sigkill()  # whatever is left (the trigger child, a stuck horse)


class Workers:
    """Worker subprocesses of one test, on its private Redis, SQL and key prefix."""

    def __init__(self, tmp_path: Path, redis_url: str, sql_url: str, keys: Keys) -> None:
        self.tmp_path = tmp_path
        self.procs: list[WorkerProc] = []
        env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITMETER_")}
        env.update(
            CREDITMETER_REDIS_URL=redis_url,
            CREDITMETER_DATABASE_URL=sql_url,
            CREDITMETER_KEY_PREFIX=keys.prefix,
            CREDITMETER_BUCKETS=str(keys.buckets),
            CREDITMETER_DATA_DIR=str(tmp_path / "data"),
            PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p),
            PYTHONUNBUFFERED="1",
        )
        self.env = env

    def start(
        self, name: str, argv: list[str], extra_env: dict[str, str] | None = None
    ) -> WorkerProc:
        log = self.tmp_path / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                argv,
                env={**self.env, **(extra_env or {})},
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = WorkerProc(name, popen, log)
        self.procs.append(proc)
        return proc

    def creditmeter_worker(self, name: str, extra_env: dict[str, str] | None = None) -> WorkerProc:
        return self.start(name, [CREDITMETER, "worker"], extra_env)

    def tails(self) -> str:
        return "\n".join(p.tail() for p in self.procs)

    def kill_all(self) -> None:
        for p in self.procs:
            p.sigkill()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = private_redis(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    c = sync_client(redis_server.url)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def keys(key_prefix: str) -> Keys:
    return Keys(prefix=key_prefix, buckets=BUCKETS)


# --- load ---------------------------------------------------------------------------------


class Charger(threading.Thread):
    """Charges round-robin over accounts until stopped (or `limit` charges); keeps the id of
    every acknowledged charge and every error."""

    def __init__(
        self, meter: Meter, accounts: list[str], tool: str, *, pause_s: float = 0.0, limit: int = 0
    ) -> None:
        super().__init__(daemon=True)
        self.meter, self.accounts, self.tool = meter, accounts, tool
        self.pause_s = pause_s  # read every loop: a test may slow the load down
        self.limit = limit
        self.acked: list[str] = []
        self.errors: list[BaseException] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        i = 0
        while not self._stop_event.is_set() and (not self.limit or i < self.limit):
            try:
                self.acked.append(
                    self.meter.charge(self.accounts[i % len(self.accounts)], self.tool).id
                )
            except Exception as exc:
                self.errors.append(exc)
            i += 1
            if self.pause_s:
                time.sleep(self.pause_s)

    def stop(self) -> None:
        self._stop_event.set()
        if self.ident is not None:  # started
            self.join(timeout=30)
        assert not self.is_alive(), "charger thread did not stop"


class AsyncCharger(threading.Thread):
    """An AsyncMeter in its own event loop: rounds of `concurrency` charges via gather."""

    def __init__(
        self, redis_url: str, keys: Keys, engine: Engine, accounts: list[str], tool: str
    ) -> None:
        super().__init__(daemon=True)
        self.redis_url, self.keys, self.engine = redis_url, keys, engine
        self.accounts, self.tool = accounts, tool
        self.concurrency = 32
        self.acked: list[str] = []
        self.errors: list[BaseException] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        meter = AsyncMeter(
            async_client(self.redis_url),
            keys=self.keys,
            loader=SqlLoader(self.engine, self.keys),
        )
        try:
            i = 0
            while not self._stop_event.is_set():
                calls = [
                    meter.charge(self.accounts[(i + j) % len(self.accounts)], self.tool)
                    for j in range(self.concurrency)
                ]
                i += self.concurrency
                for r in await asyncio.gather(*calls, return_exceptions=True):
                    if isinstance(r, BaseException):
                        self.errors.append(r)
                    else:
                        self.acked.append(r.id)
        finally:
            await meter.aclose()

    def stop(self) -> None:
        self._stop_event.set()
        if self.ident is not None:
            self.join(timeout=30)
        assert not self.is_alive(), "async charger thread did not stop"


class LoopThread(threading.Thread, Generic[T]):
    """Calls fn, then sleeps pause_s, until stopped; keeps results and errors."""

    def __init__(self, fn: Callable[[], T], pause_s: float) -> None:
        super().__init__(daemon=True)
        self.fn, self.pause_s = fn, pause_s
        self.results: list[T] = []
        self.errors: list[str] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.results.append(self.fn())
            except Exception as exc:
                self.errors.append(repr(exc))
            time.sleep(self.pause_s)

    def stop(self) -> None:
        self._stop_event.set()
        if self.ident is not None:
            self.join(timeout=60)
        assert not self.is_alive(), "loop thread did not stop"


def make_meter(client: redis.Redis, engine: Engine, keys: Keys) -> tuple[Meter, Tool]:
    tool = Tool(f"T{keys.prefix.upper()}", 1, "credits")
    save_tools(engine, [tool])
    meter = Meter(client, keys=keys, loader=SqlLoader(engine, keys))
    meter.set_tools([tool])
    return meter, tool


def accounts_in_bucket(keys: Keys, bucket: int, n: int) -> list[str]:
    out, i = [], 0
    while len(out) < n:
        a = f"{keys.prefix}-b{bucket}-{i}"
        if keys.bucket(a) == bucket:
            out.append(a)
        i += 1
    return out


def spread_accounts(keys: Keys, n: int) -> list[str]:
    accounts = [f"{keys.prefix}-{i}" for i in range(n)]
    assert {keys.bucket(a) for a in accounts} == set(keys.all_buckets())
    return accounts


def grant_all(meter: Meter, accounts: list[str]) -> list[str]:
    return [meter.grant(a, "credits", GRANT, category="paid").id for a in accounts]


# --- checks -------------------------------------------------------------------------------


def journal_ledger_ids(engine: Engine, keys: Keys) -> list[str]:
    """Ledger ids of the test's accounts written from the journal (welcome grants, which
    SQL writes itself with an empty stream id, are not acknowledged changes)."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(T_LEDGER.c.id).where(
                    T_LEDGER.c.account_id.like(f"{keys.prefix}-%"), T_LEDGER.c.stream_id != ""
                )
            ).scalars()
        )


def assert_exactly_once(engine: Engine, keys: Keys, acked: list[str], logs: str = "") -> None:
    rows = journal_ledger_ids(engine, keys)
    missing = set(acked) - set(rows)
    extra = set(rows) - set(acked)
    assert len(set(acked)) == len(acked), "the meter acknowledged one id twice"
    assert not missing and not extra and len(rows) == len(acked), (
        f"ledger rows {len(rows)} != acknowledged changes {len(acked)}: "
        f"{len(missing)} lost (e.g. {sorted(missing)[:3]}), {len(extra)} unexpected "
        f"(e.g. {sorted(extra)[:3]})\n{logs}"
    )


def pending(client: redis.Redis, keys: Keys, bucket: int) -> int:
    journal = keys.journal(bucket)
    if not client.exists(journal):
        return 0
    groups = client.xinfo_groups(journal)
    if not groups:
        return 0
    return int(client.xpending(journal, GROUP)["pending"])


def wait_until(
    predicate: Callable[[], bool], timeout_s: float, what: Callable[[], str], step_s: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s: {what()}")
        time.sleep(step_s)


def wait_drained(
    client: redis.Redis, engine: Engine, keys: Keys, workers: Workers, timeout_s: float
) -> None:
    """Until the running workers flushed every journal entry (nothing pending or unread)."""
    last: list[object] = []

    def drained() -> bool:
        status = sync_status(client, engine, keys)
        last[:] = [status.unflushed_total, [(b.pending, b.undelivered) for b in status.buckets]]
        return status.unflushed_total == 0

    wait_until(
        drained,
        timeout_s,
        lambda: (
            f"workers did not drain the journal: unflushed, per bucket (pending, "
            f"unread) = {last}\n{workers.tails()}"
        ),
        step_s=0.2,
    )


def forget_dead_locks(client: redis.Redis, keys: Keys) -> None:
    """Every flusher is dead: what locks they left are as good as expired."""
    client.delete(*[keys.flush_lock(b) for b in keys.all_buckets()])


def lock_tokens(client: redis.Redis, keys: Keys) -> dict[int, bytes]:
    pipe = client.pipeline(transaction=False)
    for b in keys.all_buckets():
        pipe.get(keys.flush_lock(b))
    return {b: t for b, t in zip(keys.all_buckets(), pipe.execute(), strict=True) if t}


def failed_jobs(client: redis.Redis, keys: Keys) -> list[str]:
    name = queue_name(keys, SYNC)
    registry = FailedJobRegistry(name, connection=client)
    out = []
    for job_id in registry.get_job_ids():
        job = Job.fetch(job_id, connection=client)
        result = job.latest_result()
        out.append(f"{job.func_name}: {result.exc_string if result else '?'}")
    return out


# --- tests --------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_of_work_horse_between_commit_and_xack_then_rerun_changes_nothing(
    tmp_path: Path, sql_url: str, redis_server: EmbeddedRedis, client: redis.Redis, keys: Keys
) -> None:
    """A work-horse SIGKILLed after SQL committed a batch and before XACK: the rows are in
    SQL, the entries still pending, the lock still held; the next flusher (once the lock is
    gone) reclaims them and writes them again, which inserts nothing and moves nothing."""
    engine = engine_for(sql_url)
    meter, tool = make_meter(client, engine, keys)
    doomed_bucket, later_bucket = 0, 2  # flush_all goes bucket 0 first: it dies there
    doomed_accounts = accounts_in_bucket(keys, doomed_bucket, 5)
    later_accounts = accounts_in_bucket(keys, later_bucket, 3)
    doomed: list[str] = grant_all(meter, doomed_accounts)
    later: list[str] = grant_all(meter, later_accounts)
    for _ in range(20):
        doomed += [meter.charge(a, tool.name).id for a in doomed_accounts]
        later += [meter.charge(a, tool.name).id for a in later_accounts]
    assert client.xlen(keys.journal(doomed_bucket)) == len(doomed)

    sync_q = queue_name(keys, SYNC)
    job = Queue(sync_q, connection=client).enqueue(
        "tests.sync.faults.fault_jobs.flush_then_sigkill_before_ack", job_timeout=60
    )
    workers = Workers(tmp_path, redis_server.url, sql_url, keys)
    try:
        rq = workers.start(
            "rq-burst", [sys.executable, "-c", RQ_BURST_WORKER, redis_server.url, sync_q]
        )
        try:
            rq.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"burst worker did not finish\n{workers.tails()}") from None
    finally:
        workers.kill_all()
    logs = workers.tails()

    # The work-horse died by SIGKILL; rq recorded the job as failed.
    assert job.get_status(refresh=True) == JobStatus.FAILED, logs
    result = job.latest_result()
    assert result is not None and "terminated unexpectedly" in (result.exc_string or ""), logs
    assert "signal 9" in (result.exc_string or ""), (result.exc_string, logs)
    assert FailedJobRegistry(sync_q, connection=client).count == 1
    # Committed, not acknowledged: SQL has the doomed bucket, Redis still has it pending.
    assert sorted(journal_ledger_ids(engine, keys)) == sorted(doomed), logs
    assert pending(client, keys, doomed_bucket) == len(doomed)
    assert client.xlen(keys.journal(doomed_bucket)) == len(doomed)  # nothing trimmed
    assert client.pttl(keys.flush_lock(doomed_bucket)) > 0  # the dead horse's lock
    # While the dead horse's lock lives, no one touches the bucket.
    assert Flusher(client, engine, keys).flush_bucket(doomed_bucket) is None

    client.delete(keys.flush_lock(doomed_bucket))  # as if its TTL ran out
    results = {r.bucket: r for r in Flusher(client, engine, keys, consumer="heir").flush_all()}
    assert set(results) == set(keys.all_buckets())
    assert results[doomed_bucket].reclaimed == len(doomed)
    assert results[doomed_bucket].entries == len(doomed)
    assert results[doomed_bucket].ledger_inserted == 0  # the rewrite inserted nothing
    assert results[later_bucket].ledger_inserted == len(later)
    assert all(pending(client, keys, b) == 0 for b in keys.all_buckets())
    again = Flusher(client, engine, keys, consumer="heir").flush_all()
    assert sum(r.entries for r in again) == 0
    assert_exactly_once(engine, keys, doomed + later, logs)
    assert_in_sync(client, engine, keys)


PAUSE_WAIT_S = 60.0  # worker start-up, a flush trigger and one batch, on a loaded 2-core host


def wait_paused(marker: Path, worker: WorkerProc) -> int:
    """The bucket a flusher wrote to its pause file (sync.flush.TEST_PAUSE_FILE): it has
    committed a batch of that bucket and waits before the XACK."""
    wait_until(
        lambda: marker.exists() and marker.read_text() != "",
        PAUSE_WAIT_S,
        lambda: f"worker A never paused after a commit\n{worker.tail()}",
    )
    return int(marker.read_text())


@pytest.mark.slow
def test_sigkill_of_worker_parent_mid_flush_second_worker_takes_over(
    tmp_path: Path, sql_url: str, redis_server: EmbeddedRedis, client: redis.Redis, keys: Keys
) -> None:
    """Worker A (parent, trigger, work-horse) SIGKILLed while its work-horse holds a bucket's
    flush lock, after SQL committed a batch and before the XACK (the flusher's test hook
    pauses it there), under steady charging; worker B waits the lock out, reclaims what A
    left pending and drains everything: every acknowledged charge in SQL once."""
    engine = engine_for(sql_url)
    meter, tool = make_meter(client, engine, keys)
    accounts = spread_accounts(keys, 16)
    acked = grant_all(meter, accounts)
    workers = Workers(tmp_path, redis_server.url, sql_url, keys)
    charger = Charger(meter, accounts, tool.name, pause_s=0.0005)
    marker = tmp_path / "flush-paused"
    try:
        charger.start()
        a = workers.creditmeter_worker(
            "worker-a", extra_env={"CREDITMETER_TEST_FLUSH_PAUSE_FILE": str(marker)}
        )
        bucket = wait_paused(marker, a)
        token = client.get(keys.flush_lock(bucket))
        in_flight = pending(client, keys, bucket)
        a.sigkill()  # mid-flush: lock in hand, a committed batch not acknowledged
        assert token is not None and client.get(keys.flush_lock(bucket)) == token
        assert in_flight > 0 and pending(client, keys, bucket) == in_flight
        journal_ids = {f[b"id"].decode() for _, f in journal_entries(client, keys.journal(bucket))}
        committed = journal_ids & set(journal_ledger_ids(engine, keys))
        assert committed, "worker A paused before any of its entries reached SQL"
        assert not charger.errors, charger.errors[:3]

        workers.creditmeter_worker("worker-b")
        charger.pause_s = 0.005  # keep charging, slower, while B waits out A's lock
        wait_until(
            lambda: client.get(keys.flush_lock(bucket)) != token,
            LOCK_TTL_S + 5,
            lambda: f"worker A's lock on bucket {bucket} outlived its TTL",
            step_s=0.1,
        )
        time.sleep(1.0)  # B flushes A's bucket while charges still arrive
        charger.stop()
        assert not charger.errors, charger.errors[:3]
        acked += charger.acked
        wait_drained(client, engine, keys, workers, DRAIN_TIMEOUT_S)
        workers.procs[-1].stop()  # B: warm shutdown
    finally:
        charger.stop()
        workers.kill_all()
    forget_dead_locks(client, keys)
    assert len(charger.acked) > 1000, len(charger.acked)
    assert_exactly_once(engine, keys, acked, workers.tails())
    assert_in_sync(client, engine, keys)


class BrokenByScriptFlush(AssertionError):
    """A charge refused, a flush job failed or the worker died under SCRIPT FLUSH."""


@pytest.mark.slow
def test_script_flush_in_a_loop_during_load_no_failed_charge(
    tmp_path: Path, sql_url: str, redis_server: EmbeddedRedis, client: redis.Redis, keys: Keys
) -> None:
    """SCRIPT FLUSH every ~10 ms while a worker flushes and a sync and an async meter
    charge: every charge succeeds (NOSCRIPT is answered by a reload, never by an error), no
    flush job fails, the worker keeps running, and every acknowledged charge is in SQL once
    (a refused one nowhere). A worker that exits anyway is restarted (as compose's
    `restart: unless-stopped` would) and reported."""
    engine = engine_for(sql_url)
    meter, tool = make_meter(client, engine, keys)
    accounts = spread_accounts(keys, 16)
    acked = grant_all(meter, accounts)
    workers = Workers(tmp_path, redis_server.url, sql_url, keys)
    flusher_client = sync_client(redis_server.url)
    script_flusher = LoopThread(flusher_client.script_flush, 0.01)
    sync_charger = Charger(meter, accounts[:8], tool.name)
    async_charger = AsyncCharger(redis_server.url, keys, engine, accounts[8:], tool.name)
    worker_exits: list[str] = []

    def restart_dead_worker() -> None:
        current = workers.procs[-1]
        if current.popen.poll() is not None:
            last = current.tail(3).splitlines()[-1:]
            worker_exits.append(f"{current.name} exited {current.popen.returncode}: {last}")
            current.sigkill()  # its trigger child and horse, if any
            workers.creditmeter_worker(f"worker-{len(worker_exits)}")

    try:
        workers.creditmeter_worker("worker-0")
        script_flusher.start()
        sync_charger.start()
        async_charger.start()
        load_until = time.monotonic() + 5.0
        while time.monotonic() < load_until:
            restart_dead_worker()
            time.sleep(0.1)
        sync_charger.stop()
        async_charger.stop()
        script_flusher.stop()
        restart_dead_worker()
        # A few dozen flushes interleaved with the load prove the point; how many fit in 5 s
        # depends on how loaded the machine is (100+ idle, ~25 on a busy 2-core CI host).
        assert len(script_flusher.results) > 20, len(script_flusher.results)
        assert not script_flusher.errors, script_flusher.errors[:3]
        assert len(sync_charger.acked) > 200 and len(async_charger.acked) > 200
        acked += sync_charger.acked + async_charger.acked
        # A flush job that failed on NOSCRIPT left its entries pending (and maybe its lock,
        # for 15 s): the worker still drains everything by itself.
        wait_drained(client, engine, keys, workers, DRAIN_TIMEOUT_S)
        workers.procs[-1].stop()
    finally:
        script_flusher.stop()
        sync_charger.stop()
        async_charger.stop()
        workers.kill_all()
        flusher_client.close()
    forget_dead_locks(client, keys)
    assert_exactly_once(engine, keys, acked, workers.tails())
    assert_in_sync(client, engine, keys)
    refused = {
        name: (len(c.errors), len(c.errors) + len(c.acked), sorted({repr(e) for e in c.errors}))
        for name, c in (("sync", sync_charger), ("async", async_charger))
    }
    jobs_failed = [f.splitlines()[-1] for f in failed_jobs(client, keys)]
    if any(n for n, _, _ in refused.values()) or jobs_failed or worker_exits:
        raise BrokenByScriptFlush(
            f"under {len(script_flusher.results)} SCRIPT FLUSHes: charges refused per meter "
            f"(refused, attempted, errors): {refused}; {len(jobs_failed)} worker jobs failed "
            f"(e.g. {jobs_failed[:2]}); worker exits: {worker_exits}"
        )


CHARGERS_DEADLINE_S = 180  # 2500 charges take ~20 s idle; a loaded 2-core host is much slower


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sqlite_two_workers_concurrently_nothing_lost(
    tmp_path: Path, redis_server: EmbeddedRedis, client: redis.Redis, keys: Keys
) -> None:
    """Two `creditmeter worker`s, both busy with flush jobs at the same time, and the test
    process flushing too, all on one SQLite file (three processes queue on its write lock;
    "database is locked" is retried), while thousands of charges hydrate and spend across
    64 accounts: every acknowledged change in SQL once, no job failed but for a locked
    SQLite."""
    sql_url = f"sqlite:///{tmp_path / 'shared.db'}"
    upgrade(sql_url)
    engine = engine_for(sql_url)
    meter, tool = make_meter(client, engine, keys)
    accounts = spread_accounts(keys, 64)
    workers = Workers(tmp_path, redis_server.url, sql_url, keys)
    sync_q = Queue(queue_name(keys, SYNC), connection=client)

    def enqueue_flush() -> str:
        # Past the trigger's dedup: queued jobs keep both workers flushing at once.
        return str(sync_q.enqueue(FLUSH_JOB, job_timeout=60, result_ttl=600, failure_ttl=600).id)

    def flush_directly() -> int:
        results = Flusher(client, engine, keys, consumer="test-process").flush_all(budget_s=2.0)
        return sum(r.entries for r in results)

    job_pump = LoopThread(enqueue_flush, 0.05)
    direct = LoopThread(flush_directly, 0.005)
    chargers = [
        Charger(meter, accounts[i::2], tool.name, pause_s=0.001, limit=2500) for i in range(2)
    ]
    acked: list[str] = []
    try:
        workers.creditmeter_worker("worker-1")
        workers.creditmeter_worker("worker-2")
        wait_until(
            lambda: len(Worker.all(queue=sync_q)) == 2,
            20,
            lambda: f"the two workers did not come up\n{workers.tails()}",
        )
        job_pump.start()
        direct.start()
        acked += grant_all(meter, accounts)  # first touches: hydration writes SQLite too
        for c in chargers:
            c.start()
        for c in chargers:
            c.join(timeout=CHARGERS_DEADLINE_S)
            assert not c.is_alive(), f"a charger did not finish in {CHARGERS_DEADLINE_S} s"
        job_pump.stop()
        direct.stop()
        for c in chargers:
            assert not c.errors, c.errors[:3]
            acked += c.acked
        assert len(acked) == len(accounts) + 5000
        wait_drained(client, engine, keys, workers, DRAIN_TIMEOUT_S)
        for w in workers.procs:
            w.stop()
    finally:
        job_pump.stop()
        direct.stop()
        for c in chargers:
            c.stop()
        workers.kill_all()
    logs = workers.tails()
    failed = failed_jobs(client, keys)
    other = [f for f in failed if "database is locked" not in f]
    assert not other, f"jobs failed for another reason than a locked SQLite: {other}\n{logs}"
    assert not [e for e in direct.errors if "database is locked" not in e], direct.errors
    assert sum(direct.results) > 0, "the test process never flushed an entry"
    overlaps = _overlapping_flush_jobs(client, keys)
    assert overlaps, f"the two workers never flushed at the same time\n{logs}"
    forget_dead_locks(client, keys)
    assert_exactly_once(engine, keys, acked, logs)
    assert_in_sync(client, engine, keys)


def _overlapping_flush_jobs(client: redis.Redis, keys: Keys) -> int:
    """Pairs of flush jobs (queued by the test, a trigger or a cron) run by different
    workers whose run times overlapped."""
    name = queue_name(keys, SYNC)
    ids = [
        *FinishedJobRegistry(name, connection=client).get_job_ids(),
        *FailedJobRegistry(name, connection=client).get_job_ids(),
    ]
    runs = [
        (j.worker_name, j.started_at, j.ended_at)
        for j in Job.fetch_many(ids, connection=client)
        if j is not None
        and j.func_name == FLUSH_JOB
        and j.started_at
        and j.ended_at
        and j.worker_name
    ]
    return sum(
        1
        for i, (wa, sa, ea) in enumerate(runs)
        for wb, sb, eb in runs[i + 1 :]
        if wa != wb and sa < eb and sb < ea
    )
