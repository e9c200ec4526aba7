"""Journal consumers of finished workers are deleted once idle with nothing pending; one
holding pending entries is kept (XAUTOCLAIM takes them over), on a real Redis."""

from __future__ import annotations

import time

import pytest
import redis
from sqlalchemy import Engine

from meter import Meter, Tool
from meter.keys import Keys
from meter.ops import as_text
from sync.catalog import save_tools
from sync.consumers import prune_idle_consumers
from sync.flush import GROUP, Flusher
from sync.loader import SqlLoader
from tests.sync.conftest import account
from worker import jobs
from worker.trigger import make_cron

IDLE_MS = 300  # the tests' idle bound: short, so the test waits little


def _consumers(client: redis.Redis, journal: str) -> dict[str, int]:
    """Consumer name -> its pending entries."""
    return {as_text(c["name"]): int(c["pending"]) for c in client.xinfo_consumers(journal, GROUP)}


@pytest.fixture
def metered(client: redis.Redis, engine: Engine, keys: Keys) -> tuple[Meter, Tool]:
    tool = Tool(f"T{keys.prefix.upper()}", 3, "credits")
    save_tools(engine, [tool])
    m = Meter(client, keys=keys, loader=SqlLoader(engine, keys))
    m.set_tools([tool])
    return m, tool


def _one_bucket_journal(metered: tuple[Meter, Tool], keys: Keys) -> tuple[str, str]:
    meter, tool = metered
    a = account()
    meter.grant(a, "credits", 100, category="paid")
    meter.charge(a, tool.name)
    return a, keys.journal(keys.bucket(a))


def test_finished_flushers_consumer_is_deleted_a_pending_one_is_kept(
    client: redis.Redis, engine: Engine, keys: Keys, metered: tuple[Meter, Tool]
) -> None:
    meter, tool = metered
    a, journal = _one_bucket_journal(metered, keys)
    # A worker that flushed and exited: its consumer stays, with nothing pending.
    Flusher(client, engine, keys, consumer="gone-host:1").flush_all()
    # A worker killed mid-flush: it read an entry and never acknowledged it.
    meter.charge(a, tool.name)
    client.xreadgroup(GROUP, "killed-host:2", {journal: ">"}, count=1)
    time.sleep(IDLE_MS / 1000 + 0.1)
    client.xgroup_createconsumer(journal, GROUP, "live-host:3")  # a worker just started
    assert _consumers(client, journal) == {"gone-host:1": 0, "killed-host:2": 1, "live-host:3": 0}

    pruned = prune_idle_consumers(client, keys, idle_ms_min=IDLE_MS)

    # The flusher read every bucket's journal: its consumer goes from each of them.
    assert (pruned.deleted, pruned.kept_pending) == (keys.buckets, 1)
    assert _consumers(client, journal) == {"killed-host:2": 1, "live-host:3": 0}
    # The kept entry is still reclaimable, and flushed: nothing was lost.
    Flusher(client, engine, keys, consumer="next-host:4").flush_all()
    assert int(client.xpending(journal, GROUP)["pending"]) == 0


def test_consumer_holding_entries_is_never_deleted_whatever_its_age(
    client: redis.Redis, keys: Keys, metered: tuple[Meter, Tool]
) -> None:
    _, journal = _one_bucket_journal(metered, keys)
    client.xgroup_create(journal, GROUP, id="0", mkstream=True)
    client.xreadgroup(GROUP, "old-host:5", {journal: ">"}, count=10)
    time.sleep(IDLE_MS / 1000 + 0.1)
    for _ in range(2):  # a second pass changes nothing either
        pruned = prune_idle_consumers(client, keys, idle_ms_min=IDLE_MS)
        assert (pruned.deleted, pruned.kept_pending) == (0, 1)
    assert _consumers(client, journal) == {"old-host:5": 2}


def test_journals_without_a_group_or_stream_are_skipped(client: redis.Redis, keys: Keys) -> None:
    client.xadd(keys.journal(0), {"k": "v"})  # a stream no flusher has read: no group
    pruned = prune_idle_consumers(client, keys, idle_ms_min=0)
    assert (pruned.deleted, pruned.kept_pending) == (0, 0)


def test_the_worker_prunes_consumers_periodically(client: redis.Redis, keys: Keys) -> None:
    cron = make_cron(client, keys)
    assert jobs.prune_consumers in [j.func for j in cron.get_jobs()]
