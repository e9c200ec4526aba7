"""SPEC §10.5: the journal -> SQL flush, on the bench's private Redis and the bench's SQL.

PostgreSQL runs every row in a schema of its own (SCHEMA, dropped and migrated afresh each
run through `sync.migrate.upgrade`), so runs start from the same empty tables and the
bench never leaves millions of rows in the shared ones; SQLite (the smoke test's fallback)
uses its tables as they are. Every run uses a fresh key prefix and fresh account names, and
the accounts are hydrated through SqlLoader (their wallets exist in SQL) before the grants.

- flush_rate: N charges journaled by the AsyncMeter (unpaced), then one timed
  `Flusher.flush_all()` in this process until the journal is drained (on PostgreSQL its
  worker threads flush several buckets at once): entries/s.
- copy_rate: the same N entries, read from the same streams and turned into ledger rows
  by the writer's row builder (`sync.writer._ledger_row`, the same values the PostgreSQL
  path `sync.copywrite` stages) before the clock starts, written with one psycopg
  `COPY ... FROM STDIN` into `bench_copy`, a normal (logged) table made
  `LIKE ledger_entries INCLUDING ALL` (same columns, primary key and indexes): rows/s. The
  flush does more per row than this ceiling: its COPY goes to a staging table, then an
  `INSERT ... SELECT ... ON CONFLICT DO NOTHING` into the ledger, and it moves the wallets
  and grants and the cursor in the same transaction.
- flush_lag_p50 / p99: `creditmeter worker` (the real service: trigger loop + RQ work-horses)
  flushes while the AsyncMeter charges at a paced target rate. Every SAMPLE_EVERY_S the
  bench takes the newest stream id of each bucket; a poller reads sync_cursors (the
  committed position per journal) every POLL_EVERY_S, and a sample's lag is the wall time
  of the first read that shows the cursor at or past it, minus the id's milliseconds:
  end to end, charge journaled -> committed and visible to a SQL reader (an upper bound by
  at most one poll interval).
- drain_after_outage_s: charges at a paced rate with no flusher running (as during a SQL
  outage: the journal backs up in Redis), then `creditmeter worker` starts; seconds from
  its start until every bucket's sync cursor reaches the journal's last id (and
  unflushed_total is 0). Includes the worker's start-up, also given on its own.

Every row ends by checking SQL: as many charge rows as charges that succeeded, and the
wallets' SQL balances down by exactly that many credits.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import redis
from sqlalchemy import Engine, func, select

from bench import workload
from bench.clients import _percentile, new_loop
from meter import AsyncMeter, Meter, MeterError, Tool
from meter.keys import Keys
from meter.redis_conn import sync_client
from sync.catalog import save_tools
from sync.db import engine_for
from sync.flush import Flusher
from sync.journal import parse, sortable, stream_ms, unsortable
from sync.loader import SqlLoader
from sync.migrate import upgrade
from sync.models import T_CURSORS, T_LEDGER, T_WALLETS
from sync.status import bucket_status
from sync.writer import _ledger_row

SCHEMA = "creditmeter_bench"
BUCKETS = 16
ACCOUNTS = 1000
FLUSH_ENTRIES = 100_000
LAG_RATE = 20_000
LAG_SECONDS = 60.0
OUTAGE_RATE = 10_000
OUTAGE_SECONDS = 60.0
IN_FLIGHT_MAX = 2000  # the paced load never has more charges outstanding than this
UNPACED_CONCURRENCY = 500
TICK_S = 0.002  # the paced load issues what is due every tick
SAMPLE_EVERY_S = 0.1
POLL_EVERY_S = 0.01
WORKER_START_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 300.0  # a flush slower than this is reported as not drained (a bound)
PROGRESS_EVERY_S = 15.0
GRANT_THREADS = 4
REPO = Path(__file__).resolve().parent.parent

COLUMNS = [c.name for c in T_LEDGER.columns]

Say = Callable[[str], None]
OnRow = Callable[[str, dict[str, Any], float], None]


def _quiet(_text: str) -> None:
    pass


# --- URLs and set-up ---------------------------------------------------------------------


def is_postgres(url: str) -> bool:
    return url.startswith("postgresql")


def sqlalchemy_url(url: str, schema: str | None) -> str:
    """The bench URL for SQLAlchemy (psycopg 3), its search_path set to `schema` if any."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    if schema and is_postgres(url):
        url += ("&" if "?" in url else "?") + "options=" + quote(f"-csearch_path={schema}")
    return url


def libpq_url(sa_url: str) -> str:
    return sa_url.replace("postgresql+psycopg://", "postgresql://")


def postgres_answers(url: str) -> bool:
    import psycopg

    try:
        psycopg.connect(libpq_url(sqlalchemy_url(url, None)), connect_timeout=3).close()
    except psycopg.OperationalError:
        return False
    return True


def drop_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(libpq_url(sqlalchemy_url(url, None)), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@dataclass
class Bench:
    redis_url: str
    sa_url: str
    keys: Keys
    engine: Engine
    client: redis.Redis
    accounts: list[str]
    charged: int = 0  # successful charges so far; SQL must end with exactly these
    log_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="cm-bench-")))

    @property
    def journals(self) -> list[str]:
        return [self.keys.journal(b) for b in self.keys.all_buckets()]

    @property
    def pg_url(self) -> str | None:
        return libpq_url(self.sa_url) if is_postgres(self.sa_url) else None


def setup(redis_url: str, sql_url: str, *, accounts: int, schema: str | None = SCHEMA) -> Bench:
    """Fresh schema (PostgreSQL), migrated; the tool in SQL and Redis; funded accounts,
    hydrated from SQL; their grant entries flushed, so the journal starts empty."""
    sa_url = sqlalchemy_url(sql_url, schema)
    if schema and is_postgres(sa_url):
        import psycopg

        drop_schema(sql_url, schema)
        with psycopg.connect(libpq_url(sqlalchemy_url(sql_url, None)), autocommit=True) as c:
            c.execute(f'CREATE SCHEMA "{schema}"')
    engine = engine_for(sa_url)
    engine.dispose()  # pooled connections of an earlier run knew the dropped tables
    upgrade(sa_url)
    prefix = "bf" + uuid.uuid4().hex[:8]
    keys = Keys(prefix=prefix, buckets=BUCKETS)
    tool = Tool(name=workload.TOOL, cost=workload.COST, credit_type=workload.CREDIT_TYPE)
    save_tools(engine, [tool])
    client = sync_client(redis_url)
    meter = Meter(client, keys=keys, loader=SqlLoader(engine, keys))
    meter.set_tools([tool])
    names = [f"{prefix}-{i:05d}" for i in range(accounts)]

    def fund(part: list[str]) -> None:
        m = Meter(sync_client(redis_url), keys=keys, loader=SqlLoader(engine, keys))
        for a in part:
            m.grant(a, workload.CREDIT_TYPE, workload.FUNDS, category="paid")
        m.redis.close()

    threads = [
        threading.Thread(target=fund, args=(names[i::GRANT_THREADS],)) for i in range(GRANT_THREADS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bench = Bench(redis_url, sa_url, keys, engine, client, names)
    _flush_everything(bench)
    return bench


def _flush_everything(bench: Bench) -> int:
    flusher = Flusher(bench.client, bench.engine, bench.keys)
    total = 0
    while True:
        total += sum(r.entries for r in flusher.flush_all(budget_s=3600))
        if unflushed(bench) == 0:
            return total


def unflushed(bench: Bench) -> int:
    """Entries Redis has not seen acknowledged by the flush (sync_status's unflushed_total)."""
    now = int(time.time() * 1000)
    return sum(
        s.pending + s.undelivered
        for s in (bucket_status(bench.client, bench.keys, b, now) for b in bench.keys.all_buckets())
    )


def verify(bench: Bench) -> tuple[bool, str]:
    """SQL has one charge row per successful charge and balances down by exactly that."""
    like = f"{bench.keys.prefix}-%"
    with bench.engine.connect() as conn:
        rows = conn.execute(
            select(func.count()).where(
                T_LEDGER.c.account_id.like(like), T_LEDGER.c.kind == "charge"
            )
        ).scalar_one()
        balance = conn.execute(
            select(func.coalesce(func.sum(T_WALLETS.c.balance), 0)).where(
                T_WALLETS.c.account_id.like(like),
                T_WALLETS.c.credit_type == workload.CREDIT_TYPE,
            )
        ).scalar_one()
    spent = len(bench.accounts) * workload.FUNDS - int(balance)
    want = bench.charged
    ok = rows == want and spent == want * workload.COST
    return ok, "" if ok else f"SQL MISMATCH: {rows} charge rows, {spent} spent, {want} charges"


# --- load ----------------------------------------------------------------------------------


@dataclass
class Load:
    ok: int = 0
    issued: int = 0
    elapsed_s: float = 0.0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s else 0.0


async def _charges(
    bench: Bench, *, total: int | None, rate: float | None, seconds: float | None
) -> Load:
    """Charges round-robin over the accounts: `total` unpaced (UNPACED_CONCURRENCY in
    flight), or paced at `rate`/s for `seconds` (at most IN_FLIGHT_MAX outstanding)."""
    meter = AsyncMeter.from_url(
        bench.redis_url, keys=bench.keys, loader=SqlLoader(bench.engine, bench.keys)
    )
    accounts = bench.accounts
    out = Load()

    async def one(account: str) -> None:
        try:
            await meter.charge(account, workload.TOOL)
        except MeterError as exc:
            out.errors[type(exc).__name__] += 1
        else:
            out.ok += 1

    clock = time.perf_counter
    t0 = clock()
    if rate is None:
        assert total is not None

        async def worker() -> None:
            while out.issued < total:
                out.issued += 1
                await one(accounts[out.issued % len(accounts)])

        await asyncio.gather(*(worker() for _ in range(UNPACED_CONCURRENCY)))
    else:
        assert seconds is not None
        # IN_FLIGHT_MAX coroutines charge one permit each; the pacer grants the permits due
        # every TICK_S (late ones at once), and at the end wakes every coroutine to stop:
        # permits the client could not use in time are dropped, not sent late.
        permits = asyncio.Semaphore(0)
        stopping = False

        async def paced() -> None:
            while True:
                await permits.acquire()
                if stopping:
                    return
                out.issued += 1
                await one(accounts[out.issued % len(accounts)])

        workers = [asyncio.ensure_future(paced()) for _ in range(IN_FLIGHT_MAX)]
        granted = 0
        while (elapsed := clock() - t0) < seconds:
            due = int(rate * elapsed) - granted
            for _ in range(due):
                permits.release()
            granted += due
            await asyncio.sleep(TICK_S)
        stopping = True
        for _ in range(IN_FLIGHT_MAX):
            permits.release()
        await asyncio.gather(*workers)
    out.elapsed_s = clock() - t0
    await meter.aclose()
    bench.charged += out.ok
    return out


def charge(
    bench: Bench,
    *,
    total: int | None = None,
    rate: float | None = None,
    seconds: float | None = None,
) -> Load:
    loop, _ = new_loop()
    try:
        return loop.run_until_complete(_charges(bench, total=total, rate=rate, seconds=seconds))
    finally:
        loop.close()


# --- SQL cursors -------------------------------------------------------------------------


def newest_ids(client: redis.Redis, journals: list[str]) -> dict[str, str]:
    pipe = client.pipeline(transaction=False)
    for j in journals:
        pipe.xrevrange(j, count=1)
    out = {}
    for j, reply in zip(journals, pipe.execute(), strict=True):
        if reply:
            sid = reply[0][0]
            out[j] = sid.decode() if isinstance(sid, bytes) else str(sid)
    return out


class CursorWatch(threading.Thread):
    """Samples the newest stream id of every bucket every SAMPLE_EVERY_S (while sampling)
    and reads sync_cursors every POLL_EVERY_S; a sample's lag is the wall time of the first
    read showing its cursor at or past it, minus the id's milliseconds."""

    def __init__(self, bench: Bench, *, sample: bool) -> None:
        super().__init__(daemon=True)
        self.bench = bench
        self.client = sync_client(bench.redis_url)
        self.sampling = sample
        self.stopping = False
        self.lags_ms: list[float] = []
        self.pending: list[tuple[str, str, int]] = []  # (journal, sortable id, id ms)
        self.cursors: dict[str, str] = {}
        self.moves: list[float] = []  # monotonic times of the reads that saw a cursor move
        self.polls = 0
        self.failure: BaseException | None = None
        self._last_sampled = threading.Event()  # set once the sample after the load is taken
        if not sample:
            self._last_sampled.set()
        self._last = {j: sortable(s) for j, s in newest_ids(self.client, bench.journals).items()}

    def _sample(self) -> None:
        for journal, sid in newest_ids(self.client, self.bench.journals).items():
            key = sortable(sid)
            if key > self._last.get(journal, ""):
                self._last[journal] = key
                self.pending.append((journal, key, stream_ms(sid)))

    def _poll(self, conn: Any) -> None:
        t_ms = time.time() * 1000  # before the read: what it shows was committed by then
        rows = conn.execute(
            select(T_CURSORS.c.journal, T_CURSORS.c.stream_id).where(
                T_CURSORS.c.journal.in_(self.bench.journals)
            )
        ).all()
        conn.rollback()
        cursors = {j: s for j, s in rows}
        if self.polls and cursors != self.cursors:
            self.moves.append(time.monotonic())
        self.cursors = cursors
        self.polls += 1
        still = []
        for journal, key, ms in self.pending:
            if self.cursors.get(journal, "") >= key:
                self.lags_ms.append(t_ms - ms)
            else:
                still.append((journal, key, ms))
        self.pending = still

    def run(self) -> None:
        try:
            with self.bench.engine.connect() as conn:
                next_sample = time.monotonic()
                while not self.stopping:
                    if self.sampling and time.monotonic() >= next_sample:
                        self._sample()
                        next_sample += SAMPLE_EVERY_S
                    elif not self.sampling and not self._last_sampled.is_set():
                        # The load's newest entries: a starved thread may have missed them.
                        self._sample()
                        self._last_sampled.set()
                    self._poll(conn)
                    time.sleep(POLL_EVERY_S)
        except BaseException as exc:  # the bench thread reports it
            self.failure = exc
        finally:
            self.client.close()

    def end_sampling(self) -> None:
        """Stops sampling after one last sample of the newest entries (at least one
        sample per load, however briefly a loaded host ran this thread)."""
        self.sampling = False
        if not self._last_sampled.wait(10):
            raise RuntimeError("cursor watch took no last sample in 10 s")

    def longest_pause(self, start: float, end: float) -> float:
        """The longest time in [start, end] (monotonic) without a cursor moving."""
        times = [start, *(t for t in self.moves if start < t < end), end]
        return max(b - a for a, b in itertools.pairwise(times))

    def reached(self, targets: dict[str, str]) -> bool:
        """Every journal's committed cursor is at or past its target stream id."""
        return all(self.cursors.get(j, "") >= sortable(s) for j, s in targets.items())

    def stop(self) -> None:
        self.stopping = True
        self.join(10)
        if self.failure is not None:
            raise RuntimeError(f"cursor watch failed: {self.failure!r}") from self.failure


# --- the worker ----------------------------------------------------------------------------


def worker_command() -> list[str]:
    script = Path(sys.executable).parent / "creditmeter"
    if script.exists():
        return [str(script), "worker"]
    return [sys.executable, "-c", "from cli.main import app; app()", "worker"]


@contextlib.contextmanager
def running_worker(bench: Bench, tag: str) -> Iterator[subprocess.Popen[bytes]]:
    """`creditmeter worker` on the bench's Redis, SQL and key prefix, in its own session;
    stopped (SIGTERM to its group, SIGKILL after 10 s) and its bucket locks freed after."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITMETER_")}
    env.update(
        CREDITMETER_REDIS_URL=bench.redis_url,
        CREDITMETER_DATABASE_URL=bench.sa_url,
        CREDITMETER_KEY_PREFIX=bench.keys.prefix,
        CREDITMETER_BUCKETS=str(bench.keys.buckets),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
    )
    log_path = bench.log_dir / f"worker-{tag}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            worker_command(),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
            # A work-horse stopped mid-flush leaves its bucket locked for the lock's TTL; it
            # is gone, and its pending entries are reclaimed by the next flusher.
            bench.client.delete(*(bench.keys.flush_lock(b) for b in bench.keys.all_buckets()))


def _worker_log_tail(bench: Bench, tag: str, lines: int = 15) -> str:
    path = bench.log_dir / f"worker-{tag}.log"
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_for(
    cond: Callable[[], bool],
    timeout_s: float,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
    bench: Bench | None = None,
    tag: str = "",
) -> float:
    start = time.monotonic()
    while not cond():
        if proc is not None and proc.poll() is not None:
            tail = _worker_log_tail(bench, tag) if bench else ""
            raise RuntimeError(f"worker exited ({proc.returncode}) before {what}:\n{tail}")
        if time.monotonic() - start > timeout_s:
            tail = _worker_log_tail(bench, tag) if bench else ""
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{tail}")
        time.sleep(POLL_EVERY_S)
    return time.monotonic() - start


def _wait_flushed(
    bench: Bench,
    cond: Callable[[], bool],
    proc: subprocess.Popen[bytes],
    tag: str,
    say: Say,
    timeout_s: float = DRAIN_TIMEOUT_S,
) -> tuple[float, bool]:
    """Seconds until cond() while the worker flushes, saying what is left every
    PROGRESS_EVERY_S; (seconds, False) after timeout_s. Raises if the worker dies."""
    start = time.monotonic()
    told = start
    while not cond():
        now = time.monotonic()
        if proc.poll() is not None:
            tail = _worker_log_tail(bench, tag)
            raise RuntimeError(f"worker exited ({proc.returncode}):\n{tail}")
        if now - start > timeout_s:
            return now - start, False
        if now - told >= PROGRESS_EVERY_S:
            told = now
            say(f"    {tag}: {unflushed(bench):,} entries not flushed yet ({now - start:.0f} s)")
        time.sleep(POLL_EVERY_S)
    return time.monotonic() - start, True


# --- the rows -----------------------------------------------------------------------------


def _ledger_rows(bench: Bench) -> list[tuple[Any, ...]]:
    """The ledger entries the flush has yet to write (after each journal's SQL cursor; a
    trim keeps the last committed entry), as the flusher's own row builder makes them."""
    with bench.engine.connect() as conn:
        cursors = dict(conn.execute(select(T_CURSORS.c.journal, T_CURSORS.c.stream_id)).all())
    rows = []
    for bucket in bench.keys.all_buckets():
        journal = bench.keys.journal(bucket)
        cursor = cursors.get(journal)
        start = "(" + unsortable(cursor) if cursor else "-"
        while True:
            page = cast(  # the bench's client answers bytes
                list[tuple[bytes, dict[bytes, bytes]]],
                bench.client.xrange(journal, min=start, max="+", count=10_000),
            )
            if not page:
                break
            for raw_id, fields in page:
                sid = raw_id.decode()
                entry = parse(sid, fields)
                if entry.is_ledger:
                    row = _ledger_row(bucket, entry)
                    rows.append(tuple(row[c] for c in COLUMNS))
            start = "(" + sid
    return rows


def copy_rows(bench: Bench, rows: list[tuple[Any, ...]]) -> float:
    """Seconds of one COPY of `rows` into bench_copy (same shape as ledger_entries, logged),
    committed; the table is emptied first."""
    import psycopg

    assert bench.pg_url is not None
    with psycopg.connect(bench.pg_url) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_copy (LIKE ledger_entries INCLUDING ALL)")
        conn.execute("TRUNCATE bench_copy")
        conn.commit()
        cols = ", ".join(f'"{c}"' for c in COLUMNS)
        t0 = time.perf_counter()
        with conn.cursor() as cur, cur.copy(f"COPY bench_copy ({cols}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        conn.commit()
        elapsed = time.perf_counter() - t0
        (count,) = conn.execute("SELECT count(*) FROM bench_copy").fetchone() or (0,)
    assert count == len(rows), (count, len(rows))
    return elapsed


def measure_flush_rate(bench: Bench, entries: int, say: Say = _quiet) -> dict[str, Any]:
    say(f"    flush_rate: journaling {entries:,} charges (AsyncMeter, unpaced)")
    load = charge(bench, total=entries)
    rows = _ledger_rows(bench)
    figs: dict[str, Any] = {}
    if bench.pg_url is not None:
        seconds = copy_rows(bench, rows)
        figs["copy_rate"] = {
            "value": len(rows) / seconds,
            "unit": "rows/s",
            "rows": len(rows),
            "elapsed_s": seconds,
            "note": f"one psycopg COPY FROM STDIN (text) of the same {len(rows):,} ledger rows, "
            "built from the same stream entries by the flusher's row builder before the clock "
            "starts, into bench_copy: a normal logged table LIKE ledger_entries INCLUDING ALL "
            "(same PK and indexes), truncated first; one commit. Ledger rows only: the flush "
            "also updates wallets and grants and the cursor",
        }
    else:
        figs["copy_rate"] = {"skipped": "skipped: COPY needs PostgreSQL"}
    flusher = Flusher(bench.client, bench.engine, bench.keys)
    t0 = time.perf_counter()
    written = 0
    while True:
        results = flusher.flush_all(budget_s=3600)
        written += sum(r.entries for r in results)
        if unflushed(bench) == 0:
            break
    seconds = time.perf_counter() - t0
    ok, mismatch = verify(bench)
    figs["flush_rate"] = {
        "value": written / seconds,
        "unit": "entries/s",
        "entries": written,
        "elapsed_s": seconds,
        "verified": ok and written == load.ok == len(rows),
        "errors": dict(load.errors),
        "note": f"Flusher.flush_all() in the bench process (no worker), {written:,} charge "
        f"entries journaled by the AsyncMeter over {bench.keys.buckets} buckets / "
        f"{len(bench.accounts)} accounts, batches of {flusher.batch_max}, up to "
        f"{flusher.workers} buckets at a time (PostgreSQL), until the journal "
        "is drained; " + (f"PostgreSQL, a fresh schema {SCHEMA}" if bench.pg_url else "SQLite"),
    }
    if mismatch:
        figs["flush_rate"]["note"] += "; " + mismatch
    return {"flush_rate": figs["flush_rate"], "copy_rate": figs["copy_rate"]}


def measure_lag(
    bench: Bench, rate: float, seconds: float, say: Say = _quiet
) -> dict[str, dict[str, Any]]:
    with running_worker(bench, "lag") as proc:
        # Ready: the worker flushes a first charge (the trigger is up, a job has run).
        before = newest_ids(bench.client, bench.journals)
        charge(bench, total=1)
        target = {
            j: s for j, s in newest_ids(bench.client, bench.journals).items() if before.get(j) != s
        }
        watch = CursorWatch(bench, sample=False)
        watch.start()
        start_s = _wait_for(
            lambda: watch.reached(target),
            WORKER_START_TIMEOUT_S,
            "its first flush",
            proc,
            bench,
            "lag",
        )
        watch.stop()
        say(
            f"    flush_lag: worker up ({start_s:.1f} s); charging at {rate:,.0f}/s for "
            f"{seconds:g} s"
        )
        watch = CursorWatch(bench, sample=True)
        watch.start()
        t_load = time.monotonic()
        load = charge(bench, rate=rate, seconds=seconds)
        watch.end_sampling()
        pause = watch.longest_pause(t_load, time.monotonic())
        tail_timeout = max(30.0, seconds)
        _, all_in = _wait_flushed(
            bench, lambda: not watch.pending, proc, "flush_lag", say, tail_timeout
        )
        missing = len(watch.pending)
        late_ms = [time.time() * 1000 - ms for _, _, ms in watch.pending]
        watch.stop()
        _, drained = _wait_flushed(bench, lambda: unflushed(bench) == 0, proc, "flush_lag", say)
    ok, mismatch = verify(bench)
    # Samples still not in SQL count with the lag they had when we stopped waiting (a
    # lower bound), so the percentiles are never better than the truth.
    lags = sorted(watch.lags_ms + late_ms)
    note = (
        f"`creditmeter worker` flushing while the AsyncMeter charges at {rate:,.0f}/s target, "
        f"{load.rate:,.0f}/s achieved, for {seconds:g} s ({len(bench.accounts)} accounts / "
        f"{bench.keys.buckets} buckets). Lag of an entry: wall time of the first read of "
        f"sync_cursors (every {POLL_EVERY_S * 1000:.0f} ms) showing it committed, minus its "
        f"stream id ms; the newest entry of every bucket sampled every "
        f"{SAMPLE_EVERY_S * 1000:.0f} ms: {len(lags):,} samples, max "
        f"{lags[-1] if lags else 0:,.0f} ms; longest pause in cursor progress under load "
        f"{pause * 1000:,.0f} ms"
    )
    if missing:
        note += (
            f"; {missing:,} samples NOT in SQL {tail_timeout:.0f} s after the load (counted "
            "with their lag then, a lower bound)"
        )
    if not drained:
        note += f"; journal NOT drained {DRAIN_TIMEOUT_S:.0f} s after the load"
    if mismatch:
        note += "; " + mismatch
    figs = {}
    for q, pct in (("p50", 0.50), ("p99", 0.99)):
        figs[f"flush_lag_{q}"] = {
            "value": _percentile(lags, pct) if lags else None,
            "unit": "ms",
            "samples": len(lags),
            "missing": missing,
            "max_ms": lags[-1] if lags else None,
            "longest_pause_s": pause,
            "target_rate": rate,
            "achieved_rate": load.rate,
            "issued": load.issued,
            "errors": dict(load.errors),
            "verified": ok and all_in and drained,
            "note": note,
        }
    return figs


def measure_drain(
    bench: Bench, rate: float, seconds: float, say: Say = _quiet
) -> dict[str, dict[str, Any]]:
    say(f"    drain: charging at {rate:,.0f}/s for {seconds:g} s with no flusher (SQL outage)")
    load = charge(bench, rate=rate, seconds=seconds)
    backlog = unflushed(bench)
    target = newest_ids(bench.client, bench.journals)
    say(f"    drain: {backlog:,} entries backed up; starting the worker")
    watch = CursorWatch(bench, sample=False)
    watch.start()
    _wait_for(lambda: watch.polls > 0, 10, "a first read of sync_cursors")
    before = dict(watch.cursors)
    with running_worker(bench, "drain") as proc:
        t0 = time.monotonic()
        first = _wait_for(
            lambda: watch.cursors != before,
            WORKER_START_TIMEOUT_S,
            "its first commit",
            proc,
            bench,
            "drain",
        )
        drained_s, drained = _wait_flushed(bench, lambda: watch.reached(target), proc, "drain", say)
        drained_s += first
        pause = watch.longest_pause(t0 + first, time.monotonic())
        if drained:
            _wait_flushed(bench, lambda: unflushed(bench) == 0, proc, "drain", say, 30)
    watch.stop()
    ok, mismatch = verify(bench)
    note = (
        f"{backlog:,} entries journaled at {rate:,.0f}/s target ({load.rate:,.0f}/s achieved) "
        f"for {seconds:g} s with no flusher running (simulates a SQL outage: the journal backs "
        "up in Redis); then `creditmeter worker` starts: seconds until every bucket's sync "
        f"cursor reaches its journal's last id, of which {first:.1f} s start-up (to its first "
        f"commit), then {backlog / max(1e-9, drained_s - first):,.0f} entries/s; longest "
        f"pause in cursor progress {pause:.1f} s"
    )
    if not drained:
        note += f"; NOT drained after {DRAIN_TIMEOUT_S:.0f} s (a lower bound)"
    if mismatch:
        note += "; " + mismatch
    return {
        "drain_after_outage_s": {
            "value": drained_s,
            "unit": "s",
            "backlog": backlog,
            "startup_s": first,
            "target_rate": rate,
            "achieved_rate": load.rate,
            "errors": dict(load.errors),
            "longest_pause_s": pause,
            "verified": ok and drained,
            "note": note,
        }
    }


def measure(
    redis_url: str,
    sql_url: str,
    *,
    entries: int = FLUSH_ENTRIES,
    accounts: int = ACCOUNTS,
    lag_rate: float = LAG_RATE,
    lag_seconds: float = LAG_SECONDS,
    outage_rate: float = OUTAGE_RATE,
    outage_seconds: float = OUTAGE_SECONDS,
    long_rows: bool = True,
    schema: str | None = SCHEMA,
    say: Say = _quiet,
    on_row: OnRow | None = None,
) -> dict[str, dict[str, Any]]:
    """Every §10.5 row (the lag and drain rows only when long_rows), in one set-up."""
    out: dict[str, dict[str, Any]] = {}
    if is_postgres(sql_url) and not postgres_answers(sql_url):
        keys = ["flush_rate", "copy_rate"]
        if long_rows:
            keys += ["flush_lag_p50", "flush_lag_p99", "drain_after_outage_s"]
        for key in keys:
            out[key] = {"skipped": "skipped: no PostgreSQL"}
            if on_row is not None:
                on_row(key, out[key], 0.0)
        return out

    def rows(fn: Callable[[], dict[str, dict[str, Any]]]) -> None:
        t = time.perf_counter()
        figs = fn()
        took = time.perf_counter() - t
        for key, fig in figs.items():
            out[key] = fig
            if on_row is not None:
                on_row(key, fig, took)

    t = time.perf_counter()
    bench = setup(redis_url, sql_url, accounts=accounts, schema=schema)
    say(f"    flush: set-up {time.perf_counter() - t:.1f} s ({accounts} accounts funded)")
    try:
        rows(lambda: measure_flush_rate(bench, entries, say))
        if long_rows:
            rows(lambda: measure_lag(bench, lag_rate, lag_seconds, say))
            rows(lambda: measure_drain(bench, outage_rate, outage_seconds, say))
    finally:
        bench.client.close()
        shutil.rmtree(bench.log_dir, ignore_errors=True)  # failures carry the log's tail
    return out
