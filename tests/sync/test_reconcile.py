"""Reconcile gives an exact answer: nothing when Redis and SQL agree, each differing field
when they do, a repair that makes them agree, and a lost Redis dataset named as such."""

from __future__ import annotations

import redis
from sqlalchemy import Engine

from meter import Meter, Tool
from meter.keys import Keys
from sync.deadletters import retry_dead_letters
from sync.epoch import check_epoch
from sync.reconcile import Difference, _repair, reconcile
from tests.sync.conftest import account
from tests.sync.invariants import assert_in_sync, dead_letter_newest


def test_agreeing_stores_report_nothing(
    meter: Meter, client: redis.Redis, engine: Engine, keys: Keys, tool: Tool
) -> None:
    a = account()
    meter.grant(a, "credits", 40, category="paid")
    meter.charge(a, tool.name)
    report = reconcile(client, engine, keys)  # drains the journal first
    assert report.drained_entries == 2
    assert report.differences == [] and report.gaps == [] and report.ok


def test_each_differing_field_is_named_and_repair_makes_them_agree(
    meter: Meter, client: redis.Redis, engine: Engine, keys: Keys, tool: Tool
) -> None:
    a = account()
    g = meter.grant(a, "credits", 40, category="paid")
    reconcile(client, engine, keys)
    client.hset(keys.wallet(a, "credits"), f"g:{g.grant_id}", "30|50|0|p")  # Redis drifts
    report = reconcile(client, engine, keys)
    assert report.differences == [
        Difference(a, "credits", "balance", 30, 40),
        Difference(a, "credits", f"grant {g.grant_id}", 30, 40),
    ]
    assert not report.ok
    repaired = reconcile(client, engine, keys, repair=True)
    assert repaired.repaired == [(a, "credits")] and repaired.ok
    assert meter.balance(a, ["credits"]).wallet("credits").balance == 40
    assert_in_sync(client, engine, keys)


def test_wallet_changed_during_repair_is_left_alone(
    meter: Meter, client: redis.Redis, engine: Engine, keys: Keys
) -> None:
    a = account()
    meter.grant(a, "credits", 40, category="paid")
    seen = client.hgetall(keys.wallet(a, "credits"))
    meter.grant(a, "credits", 1, category="paid")  # a change after the comparison
    assert not _repair(client, engine, keys, a, "credits", seen)
    assert meter.balance(a, ["credits"]).wallet("credits").balance == 41


def test_lost_redis_dataset_is_reported(
    meter: Meter, client: redis.Redis, engine: Engine, keys: Keys
) -> None:
    assert not check_epoch(client, engine, keys).lost  # first sight: the epoch is recorded
    assert not check_epoch(client, engine, keys).lost
    client.delete(keys.epoch())  # what an empty restart looks like to the marker
    report = reconcile(client, engine, keys)
    assert report.epoch.lost and report.epoch.previous is not None
    assert report.redis_lost is not None and report.redis_lost["previous"] == report.epoch.previous
    assert not reconcile(client, engine, keys).epoch.lost  # the new epoch is remembered


def test_dead_letters_are_named_as_the_cause_and_never_repaired_away(
    meter: Meter, client: redis.Redis, engine: Engine, keys: Keys, tool: Tool
) -> None:
    """A charge whose entry was dead-lettered (as the flush does: the row kept, the entry
    gone from the journal) leaves SQL above Redis by its cost: reconcile says so, a
    repair leaves the wallet alone, and `deadletters retry` makes them agree."""
    a = account()
    meter.grant(a, "credits", 40, category="paid")
    reconcile(client, engine, keys)
    charge = meter.charge(a, tool.name, 3)
    cost = 3 * tool.cost
    journal = keys.journal(keys.bucket(a))
    dead_letter_newest(client, engine, journal, "sql: refused for the test")
    report = reconcile(client, engine, keys, repair=True)
    assert Difference(a, "credits", "balance", 40 - cost, 40) in report.differences
    assert report.explained_by_dead_letters == {(a, "credits"): -cost}
    assert f"dead letters totalling {-cost}" in (report.cause(a, "credits") or "")
    assert report.repaired == [] and not report.ok
    assert meter.balance(a, ["credits"]).wallet("credits").balance == 40 - cost
    [outcome] = retry_dead_letters(engine, keys)
    assert outcome.ok and outcome.dead_letter.entry_id == charge.id
    assert_in_sync(client, engine, keys)
