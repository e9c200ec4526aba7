"""Hydration: a wallet missing from Redis is loaded from SQL, never read as zero; a new
account gets the catalog's welcome grant exactly once, however many requests race."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import Engine, func, select

from meter import Meter, Tool
from meter.errors import ChargeNotFound, OverRefund
from meter.ids import new_id
from meter.keys import Keys
from meter.redis_conn import sync_client
from sync.catalog import set_welcome_grant
from sync.flush import Flusher
from sync.loader import SqlLoader
from sync.models import T_ACCOUNTS, T_GRANTS, T_HOLDS, T_LEDGER
from tests.sync.conftest import account
from tests.sync.invariants import assert_in_sync


@pytest.fixture
def welcome_type(engine: Engine, key_prefix: str) -> Iterator[str]:
    """A credit type with a welcome grant of 25, unique to the test (the table is shared)."""
    ct = f"w{key_prefix}"
    set_welcome_grant(engine, ct, 25, expires_in_s=3600)
    yield ct
    set_welcome_grant(engine, ct, 0)


def test_first_touch_creates_the_account_with_its_welcome_grant(
    meter: Meter,
    flusher: Flusher,
    engine: Engine,
    welcome_type: str,
    client: redis.Redis,
    keys: Keys,
) -> None:
    a = account()
    meter.grant(a, welcome_type, 1, category="paid")  # the first change creates the account
    wallet = meter.balance(a, [welcome_type]).wallet(welcome_type)
    assert wallet is not None and wallet.balance == 26
    grant = next(g for g in wallet.grants if g.remaining == 25)
    assert grant.category == "promotional" and grant.expires_at_ms > 0
    with engine.connect() as conn:
        rows = conn.execute(
            select(T_LEDGER.c.kind, T_LEDGER.c.amount, T_LEDGER.c.source).where(
                T_LEDGER.c.account_id == a
            )
        ).all()
    assert rows == [("grant", 25, "welcome")]
    flusher.flush_all()
    assert_in_sync(client, engine, keys)


def test_reading_an_unknown_account_creates_nothing(
    meter: Meter, engine: Engine, welcome_type: str, client: redis.Redis, keys: Keys
) -> None:
    """A read key must not grow the liability: no account, no welcome grant, no wallet."""
    a = account()
    wallet = meter.balance(a, [welcome_type]).wallet(welcome_type)
    assert (wallet.balance, wallet.available, wallet.held, wallet.grants) == (0, 0, 0, ())
    assert meter.balance(a).account_id == a
    with engine.connect() as conn:
        assert conn.execute(select(T_ACCOUNTS.c.id).where(T_ACCOUNTS.c.id == a)).first() is None
        assert conn.execute(select(T_LEDGER.c.id).where(T_LEDGER.c.account_id == a)).first() is None
    assert not client.exists(keys.wallet(a, welcome_type))
    assert client.xlen(keys.journal(keys.bucket(a))) == 0


def test_welcome_grant_is_given_once_when_many_first_touches_race(
    redis_url: str, engine: Engine, keys: Keys, welcome_type: str, tool: Tool
) -> None:
    """20 threads, each with its own connection and loader, touch a new account at once."""
    a = account()
    barrier = threading.Barrier(20)
    balances: list[int] = []
    errors: list[BaseException] = []

    def touch() -> None:
        m = Meter(sync_client(redis_url), keys=keys, loader=SqlLoader(engine, keys))
        try:
            barrier.wait()
            balances.append(m.grant(a, welcome_type, 1, category="paid").balance)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=touch) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(balances) == list(range(26, 46))  # 25 welcome credits, then 20 x 1
    with engine.connect() as conn:
        grants = conn.execute(
            select(func.count()).where(T_GRANTS.c.account_id == a, T_GRANTS.c.source == "welcome")
        ).scalar_one()
    assert grants == 1


def test_wallet_missing_from_redis_is_loaded_with_grants_and_open_holds(
    meter: Meter, flusher: Flusher, client: redis.Redis, engine: Engine, keys: Keys, tool: Tool
) -> None:
    a = account()
    meter.grant(a, "credits", 100, category="paid")
    meter.grant(
        a, "credits", 10, category="promotional", expires_at_ms=int(time.time() * 1000) + 600_000
    )
    meter.charge(a, tool.name, quantity=2)
    hold = meter.hold(a, tool.name, amount=30)
    before = meter.balance(a, ["credits"]).wallet("credits")
    flusher.flush_all()
    # Redis loses the wallet (as after a restart); the next touch loads it from SQL.
    client.delete(keys.wallet(a, "credits"))
    after = meter.balance(a, ["credits"]).wallet("credits")
    assert after == before
    settled = hold.settle(12)
    assert settled.charged == 12 and settled.balance == before.balance - 12
    assert_in_sync(client, engine, keys)


def test_debt_and_overdraft_limit_come_back_from_sql(
    meter: Meter, flusher: Flusher, client: redis.Redis, engine: Engine, keys: Keys, tool: Tool
) -> None:
    a = account()
    meter.grant(a, "credits", 3, category="paid")  # creates the account in SQL
    meter.charge(a, tool.name, quantity=1)  # spends those 3: the wallet is empty again
    with engine.begin() as conn:
        conn.execute(T_ACCOUNTS.update().where(T_ACCOUNTS.c.id == a).values(overdraft_limit=10))
    client.delete(keys.wallet(a, "credits"))
    meter.charge(a, tool.name, quantity=2)  # 6 credits of debt, within the overdraft of 10
    flusher.flush_all()
    client.delete(keys.wallet(a, "credits"))
    w = meter.balance(a, ["credits"]).wallet("credits")
    assert w is not None and (w.balance, w.debt, w.overdraft_limit) == (-6, 6, 10)
    meter.grant(a, "credits", 10, category="paid")  # pays the debt first
    assert meter.balance(a, ["credits"]).wallet("credits").balance == 4
    assert_in_sync(client, engine, keys)


def test_missing_catalog_replica_is_restored_from_sql(
    meter: Meter, client: redis.Redis, keys: Keys, tool: Tool
) -> None:
    a = account()
    meter.grant(a, "credits", 10, category="paid")
    for b in keys.all_buckets():
        client.delete(keys.catalog(b))
    fresh = Meter(client, keys=keys, loader=meter.loader)  # knows nothing about the tool
    assert fresh.charge(a, tool.name).amount == tool.cost


def test_grants_and_holds_that_expired_while_unloaded_expire_in_sql_too(
    meter: Meter, flusher: Flusher, client: redis.Redis, engine: Engine, keys: Keys, tool: Tool
) -> None:
    a = account()
    now_ms = int(time.time() * 1000)
    meter.grant(a, "credits", 5, category="promotional", expires_at_ms=now_ms + 1_000)
    meter.grant(a, "credits", 7, category="paid")
    meter.hold(a, tool.name, amount=3, ttl_s=1)
    flusher.flush_all()
    client.delete(keys.wallet(a, "credits"))
    time.sleep(1.1)
    w = meter.balance(a, ["credits"]).wallet("credits")
    assert w is not None and (w.balance, w.held) == (7, 0)
    report = assert_in_sync(client, engine, keys)  # the expire entries reached SQL
    assert report.wallets_compared >= 1
    with engine.connect() as conn:
        kinds = conn.execute(
            select(T_LEDGER.c.kind, T_LEDGER.c.amount)
            .where(T_LEDGER.c.account_id == a)
            .order_by(T_LEDGER.c.stream_id)
        ).all()
        hold_status = conn.execute(
            select(T_HOLDS.c.status).where(T_HOLDS.c.account_id == a)
        ).scalar_one()
    assert ("expire", -5) in kinds
    assert hold_status == "expired"


def test_refund_of_a_charge_redis_forgot_loads_its_record_from_sql(
    meter: Meter, flusher: Flusher, client: redis.Redis, engine: Engine, keys: Keys, tool: Tool
) -> None:
    """The charge record lives 25 h in Redis (or Redis lost it): refunds still work, to the
    same grants, never above what is left to refund."""
    a = account()
    meter.grant(a, "credits", 4, category="promotional")
    meter.grant(a, "credits", 10, category="paid", priority=60)
    charge = meter.charge(a, tool.name, quantity=2)  # 6: 4 promotional, then 2 paid
    meter.refund(charge.id, 1)  # back to the paid grant (last taken first)
    flusher.flush_all()
    client.delete(keys.charge(keys.bucket(a), charge.id))
    refund = meter.refund(charge.id, 3)
    assert refund.refunded_total == 4
    assert [(p.delta > 0) for p in refund.breakdown] == [True, True]
    with pytest.raises(OverRefund):
        meter.refund(charge.id, 3)
    w = meter.balance(a, ["credits"]).wallet("credits")
    assert w is not None and w.balance == 14 - 6 + 4
    cats = sorted((g.category, g.remaining) for g in w.grants)
    assert cats == [("paid", 10), ("promotional", 2)]
    assert_in_sync(client, engine, keys)


def test_refund_of_an_unknown_charge_is_not_found(meter: Meter, keys: Keys) -> None:
    with pytest.raises(ChargeNotFound):
        meter.refund(new_id(0))


def test_settle_of_a_hold_redis_lost_with_its_wallet_loads_the_wallet_first(
    meter: Meter, flusher: Flusher, client: redis.Redis, engine: Engine, keys: Keys, tool: Tool
) -> None:
    a = account()
    meter.grant(a, "credits", 50, category="paid")
    hold = meter.hold(a, tool.name, amount=20)
    flusher.flush_all()
    client.delete(keys.wallet(a, "credits"), keys.hold(keys.bucket(a), hold.id))
    settled = meter.settle(hold.id, 5)  # no owner given: found through SQL
    assert (settled.charged, settled.released, settled.balance) == (5, 15, 45)
    assert_in_sync(client, engine, keys)
