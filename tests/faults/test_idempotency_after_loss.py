"""Issue 12 item 3: a retry whose result already reached SQL is answered from SQL, never
applied again, also after Redis restarted empty (its idempotency records gone with it).

Each test runs a Redis of its own, writes through it with idempotency keys, flushes to SQL,
replaces it with an empty one, then retries every request with its original key: the same
ids come back marked replayed, balances do not move, and SQL holds each entry once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, func, select

from meter import AsyncMeter, IdempotencyConflict, Meter, Tool, scripts
from meter.embedded import EmbeddedRedis
from meter.errors import HoldNotFound
from meter.keys import Keys
from meter.models import WalletSnapshot
from meter.ops import hydrate_eval
from meter.redis_conn import async_client, sync_client
from sync.apikeys import create_key
from sync.catalog import save_tools
from sync.db import engine_for
from sync.flush import Flusher
from sync.idempotency import restore_lost_keys
from sync.loader import SqlLoader
from sync.models import T_LEDGER
from tests.api.server import running_api, server_env
from tests.servers import private_redis
from tests.sync.invariants import assert_in_sync

pytestmark = pytest.mark.slow

BUCKETS = 4
HTTP_TIMEOUT_S = 10.0


def _keys() -> Keys:
    return Keys(prefix="i" + uuid.uuid4().hex[:10], buckets=BUCKETS)


def _rows_per_key(engine: Engine, account_id: str) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(T_LEDGER.c.idempotency_key, func.count())
            .where(T_LEDGER.c.account_id == account_id)
            .group_by(T_LEDGER.c.idempotency_key)
        ).all()
    return {k: n for k, n in rows if k is not None}


class Servers:
    """A Redis that is replaced by an empty one on `lose()`."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.generation = 0
        self.server: EmbeddedRedis = private_redis(tmp_path / "redis-0", appendonly=False)
        self.url = self.server.start()

    def lose(self) -> str:
        self.server.stop()
        self.generation += 1
        self.server = private_redis(self.tmp_path / f"redis-{self.generation}", appendonly=False)
        self.url = self.server.start()
        return self.url


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    s = Servers(tmp_path)
    try:
        yield s
    finally:
        s.server.stop()


def test_retries_after_redis_restarted_empty_answer_the_original_results(
    servers: Servers, sql_url: str
) -> None:
    engine = engine_for(sql_url)
    keys = _keys()
    tool = Tool(f"T{keys.prefix.upper()}", 7, "credits")
    save_tools(engine, [tool])
    acct = f"loss-{uuid.uuid4().hex[:8]}"
    client = sync_client(servers.url)
    m1 = Meter(client, keys=keys, loader=SqlLoader(engine, keys))
    m1.set_tools([tool])
    granted = m1.grant(acct, "credits", 1_000, category="paid", idempotency_key="g-1")
    charges = [m1.charge(acct, tool.name, 2, idempotency_key=f"c-{i}") for i in range(20)]
    refund = m1.refund(charges[0].id, 5, idempotency_key="r-1")
    adjusted = m1.adjust(acct, "credits", -3, reason="ticket 1", idempotency_key="a-1")
    hold = m1.hold(acct, tool.name, amount=50, ttl_s=600, idempotency_key="h-1")
    m1.settle(hold.id, 20, idempotency_key="s-1")
    Flusher(client, engine, keys).flush_all()
    before = m1.balance(acct, ["credits"]).wallet("credits")
    client.close()

    client = sync_client(servers.lose())
    try:
        m2 = Meter(client, keys=keys, loader=SqlLoader(engine, keys))
        again = [m2.charge(acct, tool.name, 2, idempotency_key=f"c-{i}") for i in range(20)]
        assert [(c.id, c.amount, c.balance) for c in again] == [
            (c.id, c.amount, c.balance) for c in charges
        ]
        assert all(c.replayed for c in again)
        g = m2.grant(acct, "credits", 1_000, category="paid", idempotency_key="g-1")
        assert (g.id, g.amount, g.balance, g.replayed) == (
            granted.id,
            1_000,
            granted.balance,
            True,
        )
        r = m2.refund(charges[0].id, 5, idempotency_key="r-1")
        assert (r.id, r.amount, r.balance, r.refunded_total, r.replayed) == (
            refund.id,
            5,
            refund.balance,
            5,
            True,
        )
        a = m2.adjust(acct, "credits", -3, reason="ticket 1", idempotency_key="a-1")
        assert (a.id, a.amount, a.balance, a.replayed) == (adjusted.id, -3, adjusted.balance, True)
        h = m2.hold(acct, tool.name, amount=50, ttl_s=600, idempotency_key="h-1").result
        assert (h.id, h.amount, h.expires_at_ms, h.replayed) == (
            hold.id,
            50,
            hold.result.expires_at_ms,
            True,
        )
        # The hold was settled before the loss: SQL loads only active holds back, so settling
        # it again finds no hold (as once its record expired) and changes nothing.
        with pytest.raises(HoldNotFound):
            m2.settle(hold.id, 20, idempotency_key="s-1")
        # A settle key SQL knows, sent for another (live) hold, is a reused key.
        live = m2.hold(acct, tool.name, amount=5, ttl_s=600)
        with pytest.raises(IdempotencyConflict):
            m2.settle(live.id, 1, idempotency_key="s-1")
        m2.release(live.id)
        # A key reused with other parameters is still refused, from SQL too.
        with pytest.raises(IdempotencyConflict):
            m2.charge(acct, tool.name, 3, idempotency_key="c-1")
        with pytest.raises(IdempotencyConflict):
            m2.refund(charges[1].id, 5, idempotency_key="r-1")

        after = m2.balance(acct, ["credits"]).wallet("credits")
        assert (
            (after.balance, after.held)
            == (before.balance, before.held)
            == (
                1_000 - 20 * 14 + 5 - 3 - 20,
                0,
            )
        )
        fresh = m2.charge(acct, tool.name, 1, idempotency_key="c-new")
        assert not fresh.replayed and fresh.balance == before.balance - 7

        Flusher(client, engine, keys).flush_all()
        per_key = _rows_per_key(engine, acct)
        assert all(per_key[f"c-{i}"] == 1 for i in range(20))
        assert per_key["g-1"] == per_key["r-1"] == per_key["a-1"] == per_key["c-new"] == 1
        assert per_key["s-1"] == 1  # the settle's charge entry
        assert_in_sync(client, engine, keys)
    finally:
        client.close()


async def test_async_client_retries_after_redis_restarted_empty_apply_once(
    servers: Servers, sql_url: str
) -> None:
    engine = engine_for(sql_url)
    keys = _keys()
    tool = Tool(f"T{keys.prefix.upper()}", 1, "credits")
    save_tools(engine, [tool])
    accounts = [f"aloss-{uuid.uuid4().hex[:8]}" for _ in range(8)]
    m1 = AsyncMeter(async_client(servers.url), keys=keys, loader=SqlLoader(engine, keys))
    await m1.set_tools([tool])
    for a in accounts:
        await m1.grant(a, "credits", 500, category="paid")
    first = await asyncio.gather(
        *(m1.charge(a, tool.name, idempotency_key=f"k-{i}") for a in accounts for i in range(25))
    )
    sync = sync_client(servers.url)
    Flusher(sync, engine, keys).flush_all()
    sync.close()
    await m1.redis.aclose()

    m2 = AsyncMeter(async_client(servers.lose()), keys=keys, loader=SqlLoader(engine, keys))
    try:
        # Concurrent retries of one account race to hydrate it: every one is still a replay.
        second = await asyncio.gather(
            *(
                m2.charge(a, tool.name, idempotency_key=f"k-{i}")
                for a in accounts
                for i in range(25)
            )
        )
        assert [c.id for c in second] == [c.id for c in first]
        assert all(c.replayed for c in second)
        for a in accounts:
            assert (await m2.balance(a, ["credits"])).wallet("credits").balance == 500 - 25
    finally:
        await m2.redis.aclose()


def test_http_retry_after_redis_restarted_empty_is_replayed_with_the_original_id(
    servers: Servers, sql_url: str, tmp_path: Path
) -> None:
    engine = engine_for(sql_url)
    prefix = "h" + uuid.uuid4().hex[:10]
    keys = Keys(prefix=prefix, buckets=BUCKETS)
    tool = Tool(f"T{prefix.upper()}", 4, "credits")
    save_tools(engine, [tool])
    acct = f"hloss-{uuid.uuid4().hex[:8]}"
    env = server_env(servers.url, sql_url, prefix, tmp_path / "api-1")
    key = create_key(
        engine, env["CREDITMETER_SECRET_KEY"].encode(), name="loss-test", scope="admin"
    ).plaintext
    auth = {"Authorization": f"Bearer {key}"}
    bodies = [{"account_id": acct, "tool": tool.name, "quantity": 1} for _ in range(10)]

    def charge_all(url: str) -> list[httpx.Response]:
        with httpx.Client(base_url=url, timeout=HTTP_TIMEOUT_S) as http:
            return [
                http.post("/v1/charges", json=b, headers={**auth, "Idempotency-Key": f"http-{i}"})
                for i, b in enumerate(bodies)
            ]

    with running_api(env, log_path=tmp_path / "api-1.log") as url:
        with httpx.Client(base_url=url, timeout=HTTP_TIMEOUT_S) as http:
            r = http.post(
                f"/v1/accounts/{acct}/grants",
                json={"credit_type": "credits", "amount": 100, "category": "paid"},
                headers={**auth, "Idempotency-Key": "http-grant"},
            )
            assert r.status_code == 201, r.text
        first = charge_all(url)
    assert [r.status_code for r in first] == [201] * 10
    client = sync_client(servers.url)
    Flusher(client, engine, keys).flush_all()
    client.close()

    env2 = server_env(servers.lose(), sql_url, prefix, tmp_path / "api-2")
    env2["CREDITMETER_SECRET_KEY"] = env["CREDITMETER_SECRET_KEY"]
    with running_api(env2, log_path=tmp_path / "api-2.log") as url:
        second = charge_all(url)
        with httpx.Client(base_url=url, timeout=HTTP_TIMEOUT_S) as http:
            balance = http.get(f"/v1/accounts/{acct}/balance", headers=auth).json()
    assert [r.status_code for r in second] == [201] * 10
    assert all(r.headers.get("Idempotent-Replayed") == "true" for r in second)
    assert [r.json()["id"] for r in second] == [r.json()["id"] for r in first]
    (credits,) = [b for b in balance["balances"] if b["credit_type"] == "credits"]
    assert credits["balance"] == 100 - 40
    assert set(_rows_per_key(engine, acct).values()) == {1}


def test_keys_of_entries_a_short_append_only_file_lost_are_answered_from_sql(
    servers: Servers, sql_url: str
) -> None:
    """Redis restarted from an AOF that lost its last second keeps its wallets (no reload):
    the flush's gap check hands the entries SQL has that Redis lost to restore_lost_keys."""
    engine = engine_for(sql_url)
    keys = _keys()
    tool = Tool(f"T{keys.prefix.upper()}", 5, "credits")
    save_tools(engine, [tool])
    acct = f"aof-{uuid.uuid4().hex[:8]}"
    client = sync_client(servers.url)
    m1 = Meter(client, keys=keys, loader=SqlLoader(engine, keys))
    m1.set_tools([tool])
    m1.grant(acct, "credits", 100, category="paid")
    Flusher(client, engine, keys).flush_all()
    stale = SqlLoader(engine, keys).load_wallet(acct, "credits")  # Redis as of the AOF's end
    charges = [m1.charge(acct, tool.name, idempotency_key=f"late-{i}") for i in range(5)]
    Flusher(client, engine, keys).flush_all()  # ... and SQL already has the last second
    client.close()

    client = sync_client(servers.lose())
    try:
        m2 = Meter(client, keys=keys, loader=SqlLoader(engine, keys))
        assert stale is not None
        client.eval(*_hydrate_args(keys, acct, replace(stale, idempotency=())))
        restored = restore_lost_keys(m2, engine, [c.id for c in charges])
        assert restored == 5
        again = [m2.charge(acct, tool.name, idempotency_key=f"late-{i}") for i in range(5)]
        assert [(c.id, c.replayed) for c in again] == [(c.id, True) for c in charges]
        assert m2.balance(acct, ["credits"]).wallet("credits").balance == 100  # nothing applied
    finally:
        client.close()


def _hydrate_args(keys: Keys, account_id: str, snap: WalletSnapshot) -> list[object]:
    ev = hydrate_eval(keys, account_id, "credits", snap)
    return [scripts.get(ev.script).source, len(ev.keys), *ev.keys, *ev.args]
