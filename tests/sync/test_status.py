"""The sync status: journal length, pending and undelivered entries, oldest unflushed age."""

from __future__ import annotations

import time

import redis
from sqlalchemy import Engine

from meter import Meter, Tool
from meter.keys import Keys
from sync.flush import GROUP, Flusher
from sync.status import sync_status
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
