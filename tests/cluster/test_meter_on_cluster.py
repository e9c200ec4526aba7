"""Meter, AsyncMeter and a flush round on a 3-master cluster: accounts of every bucket, so
keys on every master; SQL ends equal to the sum of what was granted and charged."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
import redis
from sqlalchemy import Engine, func, select

from meter import AsyncMeter, Meter, NewAccountLoader, Tool
from meter.connect import checked_redis_url
from meter.embedded import RedisConfigError
from meter.keys import Keys
from meter.redis_conn import async_client, primaries, sync_client
from meter.settings import MeterSettings
from sync.flush import Flusher
from sync.models import T_LEDGER, T_WALLETS
from tests.sync.invariants import assert_in_sync

pytestmark = pytest.mark.standalone  # the cluster is the session's own

BUCKETS = 16  # the default bucket count (MeterSettings)
PER_BUCKET = 3  # accounts of every bucket, so of every master
GRANT = 1000
COST = 3
CT = "credits"


def _accounts(keys: Keys) -> list[str]:
    """PER_BUCKET accounts of each bucket, named after the test's prefix (SQL is shared)."""
    per_bucket: dict[int, list[str]] = {b: [] for b in keys.all_buckets()}
    i = 0
    while any(len(names) < PER_BUCKET for names in per_bucket.values()):
        name = f"{keys.prefix}-{i}"
        if len(per_bucket[keys.bucket(name)]) < PER_BUCKET:
            per_bucket[keys.bucket(name)].append(name)
        i += 1
    return [name for names in per_bucket.values() for name in names]


def _keys_per_master(client: redis.Redis, prefix: str) -> list[int]:
    return [sum(1 for _ in node.scan_iter(match=f"{prefix}:*")) for node in primaries(client)]


def _sql_balances(engine: Engine, accounts: list[str]) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(T_WALLETS.c.account_id, T_WALLETS.c.balance).where(
                T_WALLETS.c.account_id.in_(accounts), T_WALLETS.c.credit_type == CT
            )
        ).all()
    return {a: int(b) for a, b in rows}


def _sql_charged(engine: Engine, accounts: list[str]) -> int:
    with engine.connect() as conn:
        total = conn.execute(
            select(func.coalesce(func.sum(T_LEDGER.c.amount), 0)).where(
                T_LEDGER.c.account_id.in_(accounts), T_LEDGER.c.kind == "charge"
            )
        ).scalar_one()
    return -int(total)


def test_a_cluster_url_builds_a_cluster_client(redis_url: str) -> None:
    client = sync_client(redis_url)
    try:
        assert isinstance(client, redis.RedisCluster)
        assert len(primaries(client)) == 3
    finally:
        client.close()


def test_every_master_is_checked_for_noeviction(redis_url: str) -> None:
    client = sync_client(redis_url)
    last = primaries(client)[-1]
    last.config_set("maxmemory-policy", "allkeys-lru")
    try:
        with pytest.raises(RedisConfigError):
            checked_redis_url(MeterSettings(redis_url=redis_url))
    finally:
        last.config_set("maxmemory-policy", "noeviction")
        client.close()
    assert checked_redis_url(MeterSettings(redis_url=redis_url)) == redis_url


def test_sync_meter_spreads_over_every_master_and_flushes_the_sum(
    redis_url: str, engine: Engine, key_prefix: str
) -> None:
    keys = Keys(prefix=key_prefix, buckets=BUCKETS)
    client = sync_client(redis_url)
    meter = Meter(client, keys=keys, loader=NewAccountLoader())
    meter.set_tools([Tool("GEN", COST, CT)])
    accounts = _accounts(keys)
    charged: Counter[str] = Counter()
    for a in accounts:
        meter.grant(a, CT, GRANT, category="paid")
        first = meter.charge(a, "GEN", 2)
        charged[a] += 2 * COST
        with meter.hold(a, "GEN", amount=10) as hold:
            hold.settle(4)
        charged[a] += 4
        meter.refund(first.id, 1)
        charged[a] -= 1
    for a in accounts:
        assert meter.balance(a, [CT]).wallet(CT).balance == GRANT - charged[a]  # type: ignore[union-attr]
    assert all(n > 0 for n in _keys_per_master(client, key_prefix))

    flusher = Flusher(client, engine, keys)
    try:
        flusher.flush_all()
    finally:
        flusher.close()
    assert _sql_balances(engine, accounts) == {a: GRANT - charged[a] for a in accounts}
    assert_in_sync(client, engine, keys)
    client.close()


async def test_async_batcher_under_concurrency_flushes_the_sum(
    redis_url: str, engine: Engine, key_prefix: str
) -> None:
    keys = Keys(prefix=key_prefix, buckets=BUCKETS)
    meter = AsyncMeter(async_client(redis_url), keys=keys, loader=NewAccountLoader())
    await meter.set_tools([Tool("GEN", COST, CT)])
    accounts = _accounts(keys)
    charges_each = 20
    await asyncio.gather(*(meter.grant(a, CT, GRANT, category="paid") for a in accounts))
    # Every account's charges at once: the batcher merges each bucket's into one call and
    # sends each round's calls in one cluster pipeline, split by master.
    await asyncio.gather(*(meter.charge(a, "GEN") for a in accounts for _ in range(charges_each)))
    hold = await meter.hold(accounts[0], "GEN", amount=10)
    await hold.settle(5)
    expected = {a: GRANT - charges_each * COST for a in accounts}
    expected[accounts[0]] -= 5
    balances = await asyncio.gather(*(meter.balance(a, [CT]) for a in accounts))
    assert {a: b.wallet(CT).balance for a, b in zip(accounts, balances, strict=True)} == expected  # type: ignore[union-attr]
    await meter.aclose()

    client = sync_client(redis_url)
    assert all(n > 0 for n in _keys_per_master(client, key_prefix))
    flusher = Flusher(client, engine, keys)
    try:
        flusher.flush_all()
    finally:
        flusher.close()
    assert _sql_balances(engine, accounts) == expected
    assert _sql_charged(engine, accounts) == sum(GRANT - b for b in expected.values())
    client.close()
