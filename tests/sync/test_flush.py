"""The flush writes every journal entry to SQL exactly once, moves the snapshots with it,
and only trims what SQL has confirmed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import DBAPIError

from meter import Meter, Tool
from meter.keys import Keys
from sync.db import engine_for
from sync.flush import GROUP, BucketFlush, Flusher
from sync.journal import sortable
from sync.loader import SqlLoader
from sync.migrate import upgrade
from sync.models import T_DEAD, T_HOLDS, T_LEDGER
from tests.servers import PrivatePostgres, postgres_available
from tests.sql_databases import is_postgres
from tests.sync.conftest import account
from tests.sync.invariants import assert_in_sync


def _ledger_count(engine: Engine, account_id: str) -> int:
    with engine.connect() as conn:
        return conn.execute(
            select(func.count()).where(T_LEDGER.c.account_id == account_id)
        ).scalar_one()


def test_every_kind_of_change_reaches_sql_once(
    meter: Meter, flusher: Flusher, client: redis.Redis, engine: Engine, keys: Keys, tool: Tool
) -> None:
    a = account()
    meter.grant(a, "credits", 100, category="paid")
    meter.grant(
        a, "credits", 20, category="promotional", expires_at_ms=int(time.time() * 1000) + 60_000
    )
    charges = [meter.charge(a, tool.name) for _ in range(5)]
    meter.refund(charges[0].id, 2)
    with meter.hold(a, tool.name, amount=10) as h:
        h.settle(4)
    h2 = meter.hold(a, tool.name, amount=5)
    h2.release()
    meter.adjust(a, "credits", -7, reason="support")
    meter.adjust(a, "credits", 3, reason="goodwill")
    flusher.flush_all()
    ledger = _ledger_count(engine, a)
    assert ledger == 2 + 5 + 1 + 1 + 2  # grants, charges, refund, settle charge, adjustments
    flusher.flush_all()
    assert _ledger_count(engine, a) == ledger
    with engine.connect() as conn:
        statuses = dict(
            conn.execute(
                select(T_HOLDS.c.id, T_HOLDS.c.status).where(T_HOLDS.c.account_id == a)
            ).all()
        )
    assert sorted(statuses.values()) == ["released", "settled"]
    assert_in_sync(client, engine, keys)


def test_rewriting_a_committed_batch_changes_nothing(
    meter: Meter, client: redis.Redis, engine: Engine, keys: Keys, tool: Tool
) -> None:
    """A flusher that committed but died before XACK leaves its entries pending: the next
    flush writes them again and nothing moves (rows keyed by entry id)."""
    a = account()
    meter.grant(a, "credits", 50, category="paid")
    for _ in range(3):
        meter.charge(a, tool.name)

    class DiesBeforeAck(Flusher):
        def _ack(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            if args[3]:  # a batch's ack, not the final lock release
                raise KeyboardInterrupt("killed between SQL commit and XACK")
            return super()._ack(*args, **kwargs)

    with pytest.raises(KeyboardInterrupt):
        DiesBeforeAck(client, engine, keys, consumer="dead-one").flush_all()
    assert _ledger_count(engine, a) == 4
    bucket = keys.bucket(a)
    assert client.xpending(keys.journal(bucket), GROUP)["pending"] == 4
    client.delete(keys.flush_lock(bucket))  # as if its TTL ran out
    result = Flusher(client, engine, keys, consumer="heir").flush_bucket(bucket)
    assert result is not None and result.reclaimed == 4
    assert result.ledger_inserted == 0
    assert _ledger_count(engine, a) == 4
    assert client.xpending(keys.journal(bucket), GROUP)["pending"] == 0
    assert_in_sync(client, engine, keys)


def test_trim_never_removes_an_unflushed_entry(
    meter: Meter, client: redis.Redis, engine: Engine, keys: Keys, tool: Tool
) -> None:
    a = account()
    bucket = keys.bucket(a)
    journal = keys.journal(bucket)
    meter.grant(a, "credits", 50, category="paid")
    flusher = Flusher(client, engine, keys, batch_max=2)
    for _ in range(5):
        meter.charge(a, tool.name)
    # Another consumer holds entries pending (read, not yet written): trimming must keep them.
    client.xgroup_create(journal, GROUP, id="0", mkstream=True)
    held = client.xreadgroup(GROUP, "slow-one", {journal: ">"}, count=2)[0][1]
    held_ids = [sid for sid, _ in held]
    client.delete(keys.flush_lock(bucket))
    flusher._reclaim = lambda journal: 0  # type: ignore[method-assign]  # slow-one is alive
    flusher.flush_bucket(bucket)
    remaining = {sid for sid, _ in client.xrange(journal)}
    assert set(held_ids) <= remaining
    assert _ledger_count(engine, a) == 4  # 6 entries, the 2 held ones not yet in SQL
    Flusher(client, engine, keys).flush_bucket(bucket)  # reclaims slow-one's entries
    assert _ledger_count(engine, a) == 6
    assert client.xlen(journal) <= 1
    assert_in_sync(client, engine, keys)


def test_malformed_entry_lands_in_dead_letter_and_the_rest_flows(
    meter: Meter, flusher: Flusher, client: redis.Redis, engine: Engine, keys: Keys, tool: Tool
) -> None:
    a = account()
    meter.grant(a, "credits", 10, category="paid")
    bucket = keys.bucket(a)
    journal = keys.journal(bucket)
    bad_id = client.xadd(
        journal,
        {"id": "x1", "k": "charge", "a": a, "t": "credits", "m": "ten", "b": "0", "ts": "1"},
    ).decode()
    meter.charge(a, tool.name)
    flusher.flush_all()
    flusher.flush_all()
    assert _ledger_count(engine, a) == 2
    with engine.connect() as conn:
        dead = conn.execute(select(T_DEAD).where(T_DEAD.c.journal == journal)).mappings().all()
    assert len(dead) == 1
    assert "'m' is not an integer" in dead[0]["error"]
    assert '"m": "ten"' in dead[0]["fields"]
    assert dead[0]["stream_id"] == sortable(bad_id)  # the malformed entry, not another one
    assert client.xpending(journal, GROUP)["pending"] == 0
    with engine.connect() as conn:
        assert conn.execute(select(T_LEDGER).where(T_LEDGER.c.id == "x1")).all() == []
    assert_in_sync(client, engine, keys)


TOOL_LEN_MAX = 64  # sync.models.TOOL: PostgreSQL enforces the VARCHAR length itself


@contextmanager
def tool_length_enforced(engine: Engine, account_id: str) -> Iterator[None]:
    """SQLite does not enforce VARCHAR lengths: a trigger refuses, as PostgreSQL does, a
    ledger row of this one account whose tool is too long (an IntegrityError, like a CHECK).
    Nothing on PostgreSQL, which refuses it by itself (a DataError)."""
    if engine.dialect.name != "sqlite":
        yield
        return
    name = "refuse_long_tool_" + account_id.replace("-", "_")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TRIGGER {name} BEFORE INSERT ON ledger_entries "
            f"WHEN NEW.account_id = '{account_id}' AND length(NEW.tool) > {TOOL_LEN_MAX} "
            "BEGIN SELECT RAISE(ABORT, 'value too long for tool'); END"
        )
    try:
        yield
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TRIGGER {name}")


def test_entry_sql_refuses_goes_to_dead_letter_with_the_sql_error(
    meter: Meter, flusher: Flusher, client: redis.Redis, engine: Engine, keys: Keys, tool: Tool
) -> None:
    """An entry that parses but that SQL refuses for its own data (a tool longer than the
    column) fails alone, its neutral canary (no tool) passes, so it alone is dead-lettered;
    the other entries of its batch are written. The same on SQLite and PostgreSQL."""
    a = account()
    meter.grant(a, "credits", 10, category="paid")
    journal = keys.journal(keys.bucket(a))
    bad_id = client.xadd(
        journal,
        {
            "id": "y" * 64,
            "k": "charge",
            "a": a,
            "t": "credits",
            "m": "-1",
            "b": "9",
            "ts": "1",
            "tool": "X" * (TOOL_LEN_MAX + 236),
        },
    ).decode()
    charge = meter.charge(a, tool.name)
    with tool_length_enforced(engine, a):
        flusher.flush_all()
    with engine.connect() as conn:
        dead = conn.execute(select(T_DEAD).where(T_DEAD.c.journal == journal)).mappings().all()
        rows = conn.execute(select(T_LEDGER.c.id).where(T_LEDGER.c.account_id == a))
        ledger_ids = set(rows.scalars())
    assert len(dead) == 1 and dead[0]["error"].startswith("sql:"), dead
    assert dead[0]["stream_id"] == sortable(bad_id)
    assert "y" * 64 not in ledger_ids and charge.id in ledger_ids
    assert _ledger_count(engine, a) == 2  # the grant and the good charge
    assert client.xpending(journal, GROUP)["pending"] == 0
    assert_in_sync(client, engine, keys)


def test_flush_of_idle_journal_writes_nothing(flusher: Flusher, keys: Keys) -> None:
    results = flusher.flush_all()
    assert len(results) == keys.buckets
    assert sum(r.entries for r in results) == 0


def test_a_flush_that_cannot_write_records_its_error_and_keeps_every_entry(
    meter: Meter,
    client: redis.Redis,
    engine: Engine,
    keys: Keys,
    tool: Tool,
    tmp_path: Path,
) -> None:
    """A database without the schema fails everything: the flush raises, records one line
    in Keys.flush_progress(), trims and dead-letters nothing; the next flush that
    can write does, and records ok_at_ms."""
    a = account()
    meter.grant(a, "credits", 10, category="paid")
    meter.charge(a, tool.name)
    journal = keys.journal(keys.bucket(a))
    unmigrated = engine_for(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(DBAPIError):
        Flusher(client, unmigrated, keys).flush_all()
    progress = {k.decode(): v.decode() for k, v in client.hgetall(keys.flush_progress()).items()}
    assert "no such table" in progress["error"] and "\n" not in progress["error"]
    assert int(progress["error_at_ms"]) > 0 and "ok_at_ms" not in progress
    assert client.xlen(journal) == 2  # nothing trimmed
    Flusher(client, engine, keys).flush_all()
    assert _ledger_count(engine, a) == 2
    progress = {k.decode(): v.decode() for k, v in client.hgetall(keys.flush_progress()).items()}
    assert int(progress["ok_at_ms"]) >= int(progress["error_at_ms"])
    with engine.connect() as conn:
        assert conn.execute(select(T_DEAD).where(T_DEAD.c.journal == journal)).all() == []
    assert_in_sync(client, engine, keys)


def _accounts_in_every_bucket(keys: Keys) -> dict[int, str]:
    """One fresh account per bucket."""
    out: dict[int, str] = {}
    while len(out) < keys.buckets:
        a = account("par")
        out.setdefault(keys.bucket(a), a)
    return out


@pytest.fixture(scope="module")
def postgres_url(sql_url: str) -> Iterator[str]:
    """Buckets are flushed in parallel on PostgreSQL only: the suite's SQL when it is
    PostgreSQL, else a private cluster of this module's own."""
    if is_postgres(sql_url):
        yield sql_url
        return
    if not postgres_available():
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl) on this machine")
    with PrivatePostgres() as pg:
        upgrade(pg.url)
        yield pg.url


@pytest.fixture
def pg_engine(postgres_url: str) -> Engine:
    return engine_for(postgres_url)


@pytest.fixture
def pg_meter(client: redis.Redis, pg_engine: Engine, keys: Keys, tool: Tool) -> Meter:
    m = Meter(client, keys=keys, loader=SqlLoader(pg_engine, keys))
    m.set_tools([tool])
    return m


def _flush_threads(
    meter: Meter, client: redis.Redis, engine: Engine, keys: Keys, tool: Tool
) -> tuple[dict[int, str], dict[int, str]]:
    """Every bucket flushed once by flush_all with 2 workers: (bucket -> the thread that
    flushed it, bucket -> its account). Buckets 0 and 1 each wait at a barrier until the
    other has started, when `parallel`: run one after the other, it breaks."""
    per_bucket = _accounts_in_every_bucket(keys)
    for a in per_bucket.values():
        meter.grant(a, "credits", 50, category="paid")
        for _ in range(3):
            meter.charge(a, tool.name)
    parallel = engine.dialect.name == "postgresql"
    both_started = threading.Barrier(2, timeout=10)
    threads: dict[int, str] = {}

    class Recording(Flusher):
        def flush_bucket(self, bucket: int, budget_s: float = 20.0) -> BucketFlush | None:
            threads[bucket] = threading.current_thread().name
            if parallel and bucket < 2:
                both_started.wait()
            return super().flush_bucket(bucket, budget_s)

    results = Recording(client, engine, keys, workers=2).flush_all()
    assert [r.bucket for r in results] == list(keys.all_buckets())
    assert all(r.entries == 4 for r in results)
    for a in per_bucket.values():
        assert _ledger_count(engine, a) == 4
    assert_in_sync(client, engine, keys)
    return threads, per_bucket


def test_flush_all_works_two_buckets_at_once_on_postgresql_each_once(
    pg_meter: Meter, client: redis.Redis, pg_engine: Engine, keys: Keys, tool: Tool
) -> None:
    threads, _ = _flush_threads(pg_meter, client, pg_engine, keys, tool)
    assert threads[0] != threads[1]


def test_flush_all_works_one_bucket_at_a_time_on_sqlite(
    client: redis.Redis, keys: Keys, tool: Tool, tmp_path: Path
) -> None:
    """SQLite takes one writer at a time: every bucket in the caller's thread."""
    url = f"sqlite:///{tmp_path / 'serial.db'}"
    upgrade(url)
    engine = engine_for(url)
    meter = Meter(client, keys=keys, loader=SqlLoader(engine, keys))
    meter.set_tools([tool])
    threads, _ = _flush_threads(meter, client, engine, keys, tool)
    assert set(threads.values()) == {threading.current_thread().name}


def test_a_failing_bucket_stops_the_other_workers_and_is_raised(
    pg_meter: Meter, client: redis.Redis, pg_engine: Engine, keys: Keys, tool: Tool
) -> None:
    """Bucket 0 fails while bucket 1 is being flushed by the other worker: bucket 1
    completes, no worker takes a further bucket, the error is raised; the next flush writes
    the rest, once."""
    meter, engine = pg_meter, pg_engine
    per_bucket = _accounts_in_every_bucket(keys)
    for a in per_bucket.values():
        meter.grant(a, "credits", 50, category="paid")
        meter.charge(a, tool.name)
    both_started = threading.Barrier(2, timeout=10)
    flushed: list[int] = []

    class FailsBucket0(Flusher):
        def flush_bucket(self, bucket: int, budget_s: float = 20.0) -> BucketFlush | None:
            if bucket < 2:
                both_started.wait()
            if bucket == 0:
                raise RuntimeError("bucket 0 cannot be written")
            if bucket == 1:
                time.sleep(0.3)  # bucket 0 has failed by now
            flushed.append(bucket)
            return super().flush_bucket(bucket, budget_s)

    with pytest.raises(RuntimeError, match="bucket 0"):
        FailsBucket0(client, engine, keys, workers=2).flush_all()
    assert flushed == [1]
    assert _ledger_count(engine, per_bucket[1]) == 2
    assert all(_ledger_count(engine, per_bucket[b]) == 0 for b in (0, 2, 3))
    Flusher(client, engine, keys, workers=2).flush_all()
    assert all(_ledger_count(engine, a) == 2 for a in per_bucket.values())
    assert_in_sync(client, engine, keys)
