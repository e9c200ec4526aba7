"""No overdraft and no double apply under concurrency (SPEC §11.1, §11.3): the async client's
auto-batching, a thread pool on one sync Meter, and separate processes each with its own Meter,
all on the shared Redis under this test's key prefix."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis

from meter import InsufficientCredits, Keys, NewAccountLoader
from meter.models import GrantInfo, WalletSnapshot
from tests.meter.helpers import journal_entries, make_async_meter, make_meter

CT = "credits"
TOOL = "GEN"
CALLS = 200
BALANCE = 10


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def journal_kinds(r: redis.Redis, keys: Keys, account: str) -> list[str]:
    out = []
    for _, fields in journal_entries(r, keys.journal(keys.bucket(account))):
        e = {_s(k): _s(v) for k, v in fields.items()}
        if e["a"] == account and e["t"] == CT:
            out.append(e["k"])
    return out


def _charge_or_none(m: Any, account: str, **kw: Any) -> Any:
    try:
        return m.charge(account, TOOL, **kw)
    except InsufficientCredits:
        return None


class ColdWalletLoader(NewAccountLoader):
    """Stands in for SQL: every wallet it loads has one grant of BALANCE credits."""

    def load_wallet(
        self, account_id: str, credit_type: str, *, create: bool = True
    ) -> WalletSnapshot:
        return WalletSnapshot(
            grants=(
                GrantInfo(
                    id="sqlgrant", remaining=BALANCE, priority=50, expires_at_ms=0, category="paid"
                ),
            )
        )


def assert_exactly_balance_charged(m: Any, r: redis.Redis, account: str, ok: int) -> None:
    w = m_balance(m, account)
    assert ok == BALANCE
    assert (w.balance, w.available, w.debt) == (0, 0, 0)
    assert journal_kinds(r, m.keys, account).count("charge") == BALANCE


def m_balance(m: Any, account: str) -> Any:
    return m.balance(account, [CT]).wallet(CT)


# --- 200 charges on a balance of 10 ---------------------------------------------------------


async def test_200_concurrent_async_charges_on_a_balance_of_10_take_exactly_10(
    redis_url: str, redis_sync: redis.Redis, key_prefix: str
) -> None:
    m = make_async_meter(redis_url, key_prefix)
    try:
        await m.set_tool(TOOL, 1)
        await m.grant("acct", CT, BALANCE)
        results = await asyncio.gather(
            *(m.charge("acct", TOOL) for _ in range(CALLS)), return_exceptions=True
        )
    finally:
        await m.aclose()
    ok = [x for x in results if not isinstance(x, BaseException)]
    failed = [x for x in results if isinstance(x, BaseException)]
    assert all(isinstance(x, InsufficientCredits) for x in failed), failed[:3]
    assert sorted(x.balance for x in ok) == list(range(BALANCE))
    assert_exactly_balance_charged(make_meter(redis_url, key_prefix), redis_sync, "acct", len(ok))


async def test_200_concurrent_async_charges_on_a_cold_wallet_hydrate_it_once(
    redis_url: str, redis_sync: redis.Redis, key_prefix: str
) -> None:
    m = make_async_meter(redis_url, key_prefix, loader=ColdWalletLoader())
    try:
        await m.set_tool(TOOL, 1)
        results = await asyncio.gather(
            *(m.charge("cold", TOOL) for _ in range(CALLS)), return_exceptions=True
        )
    finally:
        await m.aclose()
    ok = [x for x in results if not isinstance(x, BaseException)]
    failed = [x for x in results if isinstance(x, BaseException)]
    assert all(isinstance(x, InsufficientCredits) for x in failed), failed[:3]
    assert_exactly_balance_charged(
        make_meter(redis_url, key_prefix, loader=ColdWalletLoader()), redis_sync, "cold", len(ok)
    )


def test_200_charges_from_20_threads_on_a_balance_of_10_take_exactly_10(
    redis_url: str, redis_sync: redis.Redis, key_prefix: str
) -> None:
    m = make_meter(redis_url, key_prefix)
    m.set_tool(TOOL, 1)
    m.grant("acct", CT, BALANCE)
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda _: _charge_or_none(m, "acct"), range(CALLS)))
    ok = [x for x in results if x is not None]
    assert sorted(x.balance for x in ok) == list(range(BALANCE))
    assert_exactly_balance_charged(m, redis_sync, "acct", len(ok))


def _process_worker(redis_url: str, prefix: str, start: Any, n: int, out: Any) -> None:
    m = make_meter(redis_url, prefix)
    start.wait()
    ok = sum(_charge_or_none(m, "acct") is not None for _ in range(n))
    out.put(ok)


def test_200_charges_from_4_processes_on_a_balance_of_10_take_exactly_10(
    redis_url: str, redis_sync: redis.Redis, key_prefix: str
) -> None:
    m = make_meter(redis_url, key_prefix)
    m.set_tool(TOOL, 1)
    m.grant("acct", CT, BALANCE)
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(4)  # the workers start charging together, after their imports
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_process_worker, args=(redis_url, key_prefix, start, CALLS // 4, out))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    counts = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert len(counts) == 4
    assert_exactly_balance_charged(m, redis_sync, "acct", sum(counts))


# --- one idempotency key, 20 concurrent calls ------------------------------------------------


async def test_20_concurrent_async_calls_with_one_idempotency_key_debit_once(
    redis_url: str, redis_sync: redis.Redis, key_prefix: str
) -> None:
    m = make_async_meter(redis_url, key_prefix)
    try:
        await m.set_tool(TOOL, 3)
        await m.grant("acct", CT, 100)
        results = await asyncio.gather(
            *(m.charge("acct", TOOL, idempotency_key="req-1") for _ in range(20))
        )
    finally:
        await m.aclose()
    assert len({r.id for r in results}) == 1
    assert {(r.amount, r.balance) for r in results} == {(3, 97)}
    assert sum(not r.replayed for r in results) == 1
    sync = make_meter(redis_url, key_prefix)
    assert m_balance(sync, "acct").balance == 97
    assert journal_kinds(redis_sync, sync.keys, "acct").count("charge") == 1


def test_20_threads_with_one_idempotency_key_debit_once(
    redis_url: str, redis_sync: redis.Redis, key_prefix: str
) -> None:
    m = make_meter(redis_url, key_prefix)
    m.set_tool(TOOL, 3)
    m.grant("acct", CT, 100)
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(
            pool.map(lambda _: m.charge("acct", TOOL, idempotency_key="req-1"), range(20))
        )
    assert len({r.id for r in results}) == 1
    assert {(r.amount, r.balance) for r in results} == {(3, 97)}
    assert sum(not r.replayed for r in results) == 1
    assert m_balance(m, "acct").balance == 97
    assert journal_kinds(redis_sync, m.keys, "acct").count("charge") == 1


# --- holds never overbook --------------------------------------------------------------------


async def test_concurrent_async_holds_and_charges_never_overbook_available(
    redis_url: str, key_prefix: str
) -> None:
    m = make_async_meter(redis_url, key_prefix)
    rng = random.Random(7)
    try:
        await m.set_tool(TOOL, 3)
        await m.grant("acct", CT, 100)

        async def one(i: int) -> tuple[str, int] | None:
            try:
                if i % 3 == 0:
                    await m.charge("acct", TOOL)
                    return ("charge", 3)
                h = await m.hold("acct", TOOL, amount=rng.randint(1, 9))
                return ("hold", h.result.amount)
            except InsufficientCredits:
                return None

        results = await asyncio.gather(*(one(i) for i in range(150)))
        w = (await m.balance("acct", [CT])).wallet(CT)
    finally:
        await m.aclose()
    assert w is not None
    held = sum(a for kind, a in filter(None, results) if kind == "hold")
    charged = sum(a for kind, a in filter(None, results) if kind == "charge")
    assert (w.held, w.balance) == (held, 100 - charged)
    assert w.available >= 0 and held + charged <= 100
    assert w.available < 9  # the pool of requests was big enough to use nearly everything


def test_holds_from_20_threads_never_overbook_available(redis_url: str, key_prefix: str) -> None:
    m = make_meter(redis_url, key_prefix)
    m.set_tool(TOOL, 7)
    m.grant("acct", CT, 100)

    def one(_: int) -> Any:
        try:
            return m.hold("acct", TOOL)
        except InsufficientCredits:
            return None

    with ThreadPoolExecutor(max_workers=20) as pool:
        holds = [h for h in pool.map(one, range(60)) if h is not None]
    w = m_balance(m, "acct")
    assert len(holds) == 100 // 7
    assert (w.held, w.available, w.balance) == (7 * len(holds), 100 - 7 * len(holds), 100)
