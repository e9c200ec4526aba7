"""The sync status: journal length, pending and undelivered entries, oldest unflushed age."""

from __future__ import annotations

import time

import redis
from sqlalchemy import Engine

from meter import Meter, Tool
from meter.keys import Keys
from meter.times import now_ms
from sync.db import engine_for
from sync.flush import GROUP, Flusher
from sync.status import FLUSH_STALL_MS, FlushProgress, flush_stalled, sync_status
from tests.sync.conftest import account


def test_status_counts_unflushed_entries_until_the_flush(
    meter: Meter, flusher: Flusher, client: redis.Redis, engine: Engine, keys: Keys, tool: Tool
) -> None:
    a = account()
    bucket = keys.bucket(a)
    meter.grant(a, "credits", 10, category="paid")
    meter.charge(a, tool.name)
    time.sleep(0.02)
    status = sync_status(client, engine, keys)
    b = status.buckets[bucket]
    assert (b.journal_length, b.pending, b.undelivered) == (2, 0, 2)
    assert b.oldest_unflushed_age_ms is not None and b.oldest_unflushed_age_ms >= 20
    assert status.unflushed_total == 2
    # A consumer read one entry and has not acknowledged it: pending.
    client.xgroup_create(keys.journal(bucket), GROUP, id="0", mkstream=True)
    client.xreadgroup(GROUP, "reader", {keys.journal(bucket): ">"}, count=1)
    b = sync_status(client, engine, keys).buckets[bucket]
    assert (b.pending, b.undelivered) == (1, 1)
    flusher.flush_all()
    status = sync_status(client, engine, keys)
    assert status.unflushed_total == 0 and status.oldest_unflushed_age_ms is None
    assert status.as_dict()["buckets"][bucket]["pending"] == 0


def test_status_counts_dead_letters_of_this_deployment(
    flusher: Flusher, client: redis.Redis, engine: Engine, keys: Keys
) -> None:
    client.xadd(keys.journal(0), {"k": "nonsense"})
    flusher.flush_all()
    assert sync_status(client, engine, keys).dead_letters == 1


# --- issue 12: the status from Redis alone, and the flusher's progress -------------------

# Nothing listens on port 1: every connection is refused at once, as with a stopped server.
SQL_DOWN_URL = "postgresql+psycopg://postgres@127.0.0.1:1/creditmeter"


def test_status_answers_from_redis_alone_while_sql_is_down(
    meter: Meter, client: redis.Redis, keys: Keys, tool: Tool
) -> None:
    a = account()
    meter.grant(a, "credits", 10, category="paid")
    meter.charge(a, tool.name)
    status = sync_status(client, engine_for(SQL_DOWN_URL), keys)
    assert status.sql == "down"
    assert (status.dead_letters, status.gaps, status.redis_lost) == (None, None, None)
    assert status.stripe_events_unapplied is None
    assert status.unflushed_total == 2 and status.buckets[keys.bucket(a)].undelivered == 2
    body = status.as_dict()
    assert body["sql"] == "down" and body["dead_letters"] is None


def test_status_reports_the_flush_progress_and_a_stall(
    meter: Meter, flusher: Flusher, client: redis.Redis, engine: Engine, keys: Keys, tool: Tool
) -> None:
    a = account()
    meter.grant(a, "credits", 10, category="paid")
    flusher.flush_all()
    status = sync_status(client, engine, keys)
    assert status.sql == "ok" and status.flush.ok_at_ms is not None
    assert not status.flush.failing and not status.flush_stalled
    ok_at = status.flush.ok_at_ms
    # The flusher failed after its last success and an entry waits: stalled.
    client.hset(
        keys.flush_progress(), mapping={"error": "bucket 0: boom", "error_at_ms": ok_at + 1}
    )
    assert not sync_status(client, engine, keys).flush_stalled  # nothing waits yet
    meter.charge(a, tool.name)
    status = sync_status(client, engine, keys)
    assert status.flush == FlushProgress(ok_at, "bucket 0: boom", ok_at + 1)
    assert status.flush_stalled and status.as_dict()["flush"]["error"] == "bucket 0: boom"
    flusher.flush_all()  # a success since: no longer stalled
    status = sync_status(client, engine, keys)
    assert not status.flush.failing and not status.flush_stalled


def test_an_entry_older_than_the_stall_threshold_is_a_stall_without_any_error(
    client: redis.Redis, engine: Engine, keys: Keys
) -> None:
    """No flusher running at all writes no error: the age of what waits tells."""
    old_ms = now_ms() - FLUSH_STALL_MS - 1_000
    client.xadd(keys.journal(0), {"k": "entry"}, id=f"{old_ms}-0")
    status = sync_status(client, engine, keys)
    assert status.flush == FlushProgress(None, None, None)
    assert status.oldest_unflushed_age_ms is not None
    assert status.oldest_unflushed_age_ms >= FLUSH_STALL_MS and status.flush_stalled
    assert not flush_stalled(FlushProgress(None, None, None), 1, FLUSH_STALL_MS - 1)
    client.delete(keys.journal(0))
