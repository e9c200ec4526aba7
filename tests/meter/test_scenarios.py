"""Behaviour of the meter, each scenario written once and run through both clients.

`meter_factory` yields a factory of adapters: the same `async def` scenario drives the sync
`Meter` (through an adapter whose awaitable methods call it directly) and the `AsyncMeter`.
Every test works on its own key prefix of the shared Redis and a controllable clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis

from meter import (
    HoldNotActive,
    IdempotencyConflict,
    InsufficientCredits,
    NewAccountLoader,
    OverRefund,
    ToolDisabled,
)
from meter.ids import expire_entry_id
from meter.models import WalletBalance
from tests.meter.helpers import Clock, journal_entries, make_async_meter, make_meter, snapshot

CT = "credits"
TOOL = "GEN"  # cost 1 unless a test says otherwise
LEDGER_KINDS = {"grant", "charge", "refund", "adjustment", "expire", "clawback"}


# --- adapters: one scenario, two clients ---------------------------------------------------


class SyncHoldAdapter:
    def __init__(self, hold: Any) -> None:
        self.h = hold
        self.id = hold.id
        self.result = hold.result

    async def settle(self, amount: int | None = None, **kw: Any) -> Any:
        return self.h.settle(amount, **kw)

    async def release(self, **kw: Any) -> Any:
        return self.h.release(**kw)

    async def extend(self, ttl_s: int, **kw: Any) -> Any:
        return self.h.extend(ttl_s, **kw)


class SyncAdapter:
    """Awaitable facade over the sync Meter: each method runs the sync call directly."""

    kind = "sync"

    def __init__(self, meter: Any, clock: Clock, r: redis.Redis) -> None:
        self.m = meter
        self.clock = clock
        self.t0 = clock.now_ms
        self.redis = r
        self.keys = meter.keys

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        fn = getattr(self.m, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        return call

    async def hold(self, *args: Any, **kwargs: Any) -> SyncHoldAdapter:
        return SyncHoldAdapter(self.m.hold(*args, **kwargs))

    async def in_hold(
        self, body: Callable[[Any], Awaitable[None]], *args: Any, **kwargs: Any
    ) -> None:
        """Runs body inside `with m.hold(...) as h`."""
        with self.m.hold(*args, **kwargs) as h:
            await body(SyncHoldAdapter(h))

    async def close(self) -> None:
        self.m.redis.close()


class AsyncAdapter:
    kind = "async"

    def __init__(self, meter: Any, clock: Clock, r: redis.Redis) -> None:
        self.m = meter
        self.clock = clock
        self.t0 = clock.now_ms
        self.redis = r
        self.keys = meter.keys

    def __getattr__(self, name: str) -> Any:
        return getattr(self.m, name)

    async def hold(self, *args: Any, **kwargs: Any) -> Any:
        return await self.m.hold(*args, **kwargs)

    async def in_hold(
        self, body: Callable[[Any], Awaitable[None]], *args: Any, **kwargs: Any
    ) -> None:
        """Runs body inside `async with m.hold(...) as h`."""
        async with self.m.hold(*args, **kwargs) as h:
            await body(h)

    async def close(self) -> None:
        await self.m.aclose()


Factory = Callable[..., Awaitable[Any]]


@pytest.fixture(params=["sync", "async"])
async def meter_factory(
    request: pytest.FixtureRequest, redis_url: str, redis_sync: redis.Redis, key_prefix: str
) -> AsyncIterator[Factory]:
    """`await new(loader=..., cost=...)` -> adapter on this test's prefix, tool GEN set."""
    opened: list[Any] = []

    async def new(loader: Any = None, cost: int = 1, clock: Clock | None = None) -> Any:
        # Near real time: Redis TTLs (PEXPIREAT of hold records) run on Redis's own clock.
        clock = clock or Clock(now_ms())
        loader = loader or NewAccountLoader()
        if request.param == "sync":
            a: Any = SyncAdapter(
                make_meter(redis_url, key_prefix, clock, loader), clock, redis_sync
            )
        else:
            a = AsyncAdapter(
                make_async_meter(redis_url, key_prefix, clock, loader), clock, redis_sync
            )
        opened.append(a)
        await a.set_tool(TOOL, cost)
        return a

    yield new
    for a in opened:
        await a.close()


# --- helpers ---------------------------------------------------------------------------------


def now_ms() -> int:
    """Real time rounded down to a second, so test clocks read well."""
    return int(time.time()) * 1000


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def journal(m: Any, account: str, credit_type: str = CT) -> list[dict[str, str]]:
    """The wallet's journal entries, oldest first, as str dicts."""
    raw = journal_entries(m.redis, m.keys.journal(m.keys.bucket(account)))
    out = []
    for _, fields in raw:
        e = {_s(k): _s(v) for k, v in fields.items()}
        if e["a"] == account and e["t"] == credit_type:
            out.append(e)
    return out


def ledger(m: Any, account: str) -> list[dict[str, str]]:
    return [e for e in journal(m, account) if e["k"] in LEDGER_KINDS]


def parts(g: str) -> list[tuple[str, int, int]]:
    if not g:
        return []
    out = []
    for item in g.split(";"):
        gid, delta, after = item.split(":")
        out.append((gid, int(delta), int(after)))
    return out


async def wallet(m: Any, account: str) -> WalletBalance:
    w = (await m.balance(account, [CT])).wallet(CT)
    assert w is not None
    return w


async def remaining(m: Any, account: str) -> dict[str, int]:
    return {g.id: g.remaining for g in (await wallet(m, account)).grants}


# --- burn-down order -------------------------------------------------------------------------


async def test_charges_burn_priority_then_soonest_expiry_never_expiring_last_then_oldest(
    meter_factory: Factory,
) -> None:
    m = await meter_factory()
    acct = "burn"
    t = m.clock.now_ms
    late_prio = (await m.grant(acct, CT, 10, priority=90, expires_at_ms=t + 500)).grant_id
    never_old = (await m.grant(acct, CT, 10, priority=50)).grant_id
    time.sleep(0.003)  # ids are UUIDv7: a later millisecond is a later ("newer") id
    never_new = (await m.grant(acct, CT, 10, priority=50)).grant_id
    exp_late = (await m.grant(acct, CT, 10, priority=50, expires_at_ms=t + 2000)).grant_id
    exp_soon = (await m.grant(acct, CT, 10, priority=50, expires_at_ms=t + 1000)).grant_id
    first = (await m.grant(acct, CT, 10, priority=10)).grant_id

    r = await m.charge(acct, TOOL, 55)

    assert [(p.grant_id, p.delta, p.remaining_after) for p in r.breakdown] == [
        (first, -10, 0),
        (exp_soon, -10, 0),
        (exp_late, -10, 0),
        (never_old, -10, 0),
        (never_new, -10, 0),
        (late_prio, -5, 5),
    ]
    assert r.amount == 55 and r.balance == 5
    assert await remaining(m, acct) == {late_prio: 5}


async def test_grants_made_in_the_same_millisecond_burn_oldest_first(
    meter_factory: Factory,
) -> None:
    m = await meter_factory()
    acct = "same_ms"
    made = [(await m.grant(acct, CT, 1)).grant_id for _ in range(40)]

    r = await m.charge(acct, TOOL, 40)

    assert [p.grant_id for p in r.breakdown] == made


# --- expiry ----------------------------------------------------------------------------------


async def test_grant_is_spendable_one_ms_before_expiry_and_not_at_it_with_one_expire_entry(
    meter_factory: Factory,
) -> None:
    m = await meter_factory()
    acct = "expiry"
    t_exp = m.t0 + 1000
    expiring = (await m.grant(acct, CT, 10, priority=10, expires_at_ms=t_exp)).grant_id
    fallback = (await m.grant(acct, CT, 5, priority=60)).grant_id

    m.clock.now_ms = t_exp - 1
    r = await m.charge(acct, TOOL, 3)
    assert [(p.grant_id, p.delta) for p in r.breakdown] == [(expiring, -3)]
    assert (await wallet(m, acct)).balance == 12

    m.clock.now_ms = t_exp
    w = await wallet(m, acct)
    assert w.balance == 5 and [g.id for g in w.grants] == [fallback]
    with pytest.raises(InsufficientCredits):
        await m.charge(acct, TOOL, 6)
    r = await m.charge(acct, TOOL, 1)
    assert [(p.grant_id, p.delta) for p in r.breakdown] == [(fallback, -1)]
    assert r.balance == 4
    await m.expire_wallet(acct, CT)  # the sweep finds nothing left to expire
    m.clock.advance(5000)
    await m.charge(acct, TOOL, 1)

    expires = [e for e in journal(m, acct) if e["k"] == "expire"]
    assert len(expires) == 1
    (e,) = expires
    assert e["id"] == expire_entry_id(expiring)
    assert int(e["m"]) == -7 and int(e["b"]) == 5 and int(e["ts"]) == t_exp
    assert parts(e["g"]) == [(expiring, -7, 0)]


async def test_sweep_writes_the_expire_entry_once_and_later_charges_add_none(
    meter_factory: Factory,
) -> None:
    m = await meter_factory()
    acct = "sweep"
    gid = (await m.grant(acct, CT, 8, expires_at_ms=m.t0 + 50)).grant_id
    await m.grant(acct, CT, 2)
    m.clock.now_ms = m.t0 + 50

    first = await m.expire_wallet(acct, CT)
    again = await m.expire_wallet(acct, CT)
    await m.charge(acct, TOOL, 1)

    assert (first.grants_expired, again.grants_expired) == (1, 0)
    expires = [e for e in journal(m, acct) if e["k"] == "expire"]
    assert [(e["id"], int(e["m"]), int(e["b"])) for e in expires] == [(expire_entry_id(gid), -8, 2)]
    assert (await wallet(m, acct)).balance == 1


# --- debt and overdraft ----------------------------------------------------------------------


async def test_new_grants_pay_the_debt_first(meter_factory: Factory) -> None:
    m = await meter_factory(loader=NewAccountLoader(overdraft_limit=20))
    acct = "debtor"
    g0 = (await m.grant(acct, CT, 5)).grant_id
    r = await m.charge(acct, TOOL, 12)
    assert [(p.grant_id, p.delta, p.remaining_after) for p in r.breakdown] == [
        (g0, -5, 0),
        ("debt", -7, -7),
    ]
    w = await wallet(m, acct)
    assert (w.balance, w.available, w.debt) == (-7, -7, 7)

    g1 = await m.grant(acct, CT, 10)
    assert g1.balance == 3
    w = await wallet(m, acct)
    assert w.debt == 0 and await remaining(m, acct) == {g1.grant_id: 3}
    (entry,) = [e for e in journal(m, acct) if e["id"] == g1.id]
    assert parts(entry["g"]) == [("debt", 7, 0), (g1.grant_id, 3, 3)]
    assert int(entry["m"]) == 10 and int(entry["b"]) == 3

    small = await meter_factory(loader=NewAccountLoader(overdraft_limit=20))
    await small.charge("debtor2", TOOL, 9)
    paid_off = await small.grant("debtor2", CT, 4)  # all of it goes to the debt
    w = await wallet(small, "debtor2")
    assert (paid_off.balance, w.debt, w.grants) == (-5, 5, ())


async def test_overdraft_limit_is_never_exceeded_by_charges_holds_or_adjustments(
    meter_factory: Factory,
) -> None:
    m = await meter_factory(loader=NewAccountLoader(overdraft_limit=20))
    acct = "overdraft"
    await m.grant(acct, CT, 5)
    r = await m.charge(acct, TOOL, 25)
    assert (r.balance, r.available) == (-20, -20)
    with pytest.raises(InsufficientCredits) as exc:
        await m.charge(acct, TOOL, 1)
    assert (exc.value.available, exc.value.required) == (-20, 1)
    with pytest.raises(InsufficientCredits):
        await m.hold(acct, TOOL, amount=1)
    with pytest.raises(InsufficientCredits):
        await m.adjust(acct, CT, -1, reason="test")
    await m.grant(acct, CT, 10)
    h = await m.hold(acct, TOOL, amount=10)
    assert h.result.available == -20
    with pytest.raises(InsufficientCredits):
        await m.charge(acct, TOOL, 1)
    w = await wallet(m, acct)
    assert (w.balance, w.held, w.available, w.debt) == (-10, 10, -20, 10)

    strict = await meter_factory()  # overdraft 0
    await strict.grant("strict", CT, 3)
    assert (await strict.charge("strict", TOOL, 3)).balance == 0
    with pytest.raises(InsufficientCredits):
        await strict.charge("strict", TOOL, 1)
    assert (await wallet(strict, "strict")).balance == 0


# --- refunds ---------------------------------------------------------------------------------


async def test_refunds_go_back_to_the_original_grants_last_taken_first_and_recreate_depleted(
    meter_factory: Factory,
) -> None:
    m = await meter_factory()
    acct = "refund"
    exp = m.t0 + 60_000
    a = (await m.grant(acct, CT, 5, priority=10, expires_at_ms=exp)).grant_id
    b = (await m.grant(acct, CT, 10, priority=20, category="paid")).grant_id
    c = await m.charge(acct, TOOL, 12)
    assert await remaining(m, acct) == {b: 3}  # a was depleted and removed

    r1 = await m.refund(c.id, 4)
    assert [(p.grant_id, p.delta, p.remaining_after) for p in r1.breakdown] == [(b, 4, 7)]
    assert (r1.amount, r1.balance, r1.refunded_total) == (4, 7, 4)

    r2 = await m.refund(c.id)  # the rest: 3 more to b, then a recreated
    assert [(p.grant_id, p.delta, p.remaining_after) for p in r2.breakdown] == [
        (b, 3, 10),
        (a, 5, 5),
    ]
    assert (r2.amount, r2.balance, r2.refunded_total) == (8, 15, 12)
    grants = {g.id: g for g in (await wallet(m, acct)).grants}
    assert (
        grants[a].remaining,
        grants[a].priority,
        grants[a].expires_at_ms,
        grants[a].category,
    ) == (5, 10, exp, "promotional")
    assert (grants[b].remaining, grants[b].category) == (10, "paid")

    with pytest.raises(OverRefund):
        await m.refund(c.id, 1)
    assert (await wallet(m, acct)).balance == 15


async def test_refund_of_expired_grants_goes_to_successor_grants_of_the_same_category(
    meter_factory: Factory,
) -> None:
    m = await meter_factory()
    acct = "successor"
    paid = (
        await m.grant(acct, CT, 10, priority=10, category="paid", expires_at_ms=m.t0 + 1000)
    ).grant_id
    promo = (
        await m.grant(acct, CT, 10, priority=20, category="promotional", expires_at_ms=m.t0 + 2000)
    ).grant_id
    c = await m.charge(acct, TOOL, 14)  # paid -10, promo -4
    m.clock.now_ms = m.t0 + 2000  # both expired (promo loses 6)

    r = await m.refund(c.id)

    assert r.amount == 14 and r.balance == 14
    grants = {g.id: g for g in (await wallet(m, acct)).grants}
    assert paid not in grants and promo not in grants
    by_cat = {g.category: g for g in grants.values()}
    assert (by_cat["paid"].remaining, by_cat["paid"].expires_at_ms, by_cat["paid"].priority) == (
        10,
        0,
        10,
    )
    assert (
        by_cat["promotional"].remaining,
        by_cat["promotional"].expires_at_ms,
        by_cat["promotional"].priority,
    ) == (4, 0, 20)
    (entry,) = [e for e in journal(m, acct) if e["k"] == "refund"]
    assert sorted(entry["ng"].split(";")) == sorted(
        [f"{by_cat['paid'].id}:p:10:0", f"{by_cat['promotional'].id}:r:20:0"]
    )


async def test_total_refunded_never_exceeds_the_charge(meter_factory: Factory) -> None:
    m = await meter_factory()
    acct = "overrefund"
    await m.grant(acct, CT, 50)
    c = await m.charge(acct, TOOL, 10)
    assert (await m.refund(c.id, 6)).refunded_total == 6
    with pytest.raises(OverRefund) as exc:
        await m.refund(c.id, 5)
    assert exc.value.refundable == 4
    assert (await m.refund(c.id)).amount == 4
    with pytest.raises(OverRefund):
        await m.refund(c.id)
    w = await wallet(m, acct)
    assert w.balance == 50
    refunds = [int(e["m"]) for e in journal(m, acct) if e["k"] == "refund"]
    assert refunds == [6, 4]


# --- holds -----------------------------------------------------------------------------------


async def test_hold_reserves_credits_so_available_is_balance_minus_held(
    meter_factory: Factory,
) -> None:
    m = await meter_factory()
    acct = "hold"
    await m.grant(acct, CT, 100)
    h = await m.hold(acct, TOOL, amount=30)
    assert (h.result.balance, h.result.held, h.result.available) == (100, 30, 70)
    w = await wallet(m, acct)
    assert (w.balance, w.held, w.available) == (100, 30, 70)
    with pytest.raises(InsufficientCredits):
        await m.charge(acct, TOOL, 71)
    assert (await m.charge(acct, TOOL, 70)).available == 0


async def test_settle_below_the_hold_charges_that_and_releases_the_rest(
    meter_factory: Factory,
) -> None:
    m = await meter_factory()
    acct = "settle_below"
    await m.grant(acct, CT, 100)
    h = await m.hold(acct, TOOL, amount=30)
    s = await h.settle(20)
    assert (s.charged, s.released, s.balance, s.held, s.available) == (20, 10, 80, 0, 80)
    charge = [e for e in ledger(m, acct) if e["k"] == "charge"]
    assert [(e["id"], int(e["m"]), e["hold"]) for e in charge] == [(s.entry_id, -20, h.id)]


async def test_settle_above_the_hold_succeeds_when_the_account_covers_it(
    meter_factory: Factory,
) -> None:
    m = await meter_factory()
    acct = "settle_above"
    await m.grant(acct, CT, 100)
    h = await m.hold(acct, TOOL, amount=30)
    s = await h.settle(50)
    assert (s.charged, s.released, s.balance, s.held, s.available) == (50, 0, 50, 0, 50)


async def test_settle_above_the_hold_not_covered_fails_and_the_hold_stays_active(
    meter_factory: Factory,
) -> None:
    m = await meter_factory()
    acct = "settle_short"
    await m.grant(acct, CT, 40)
    h = await m.hold(acct, TOOL, amount=30)
    with pytest.raises(InsufficientCredits) as exc:
        await h.settle(41)
    assert exc.value.required == 41
    w = await wallet(m, acct)
    assert (w.balance, w.held, w.available) == (40, 30, 10)
    s = await h.settle(40)
    assert (s.charged, s.balance, s.held) == (40, 0, 0)


async def test_release_ends_the_hold_without_charging(meter_factory: Factory) -> None:
    m = await meter_factory()
    acct = "release"
    await m.grant(acct, CT, 100)
    h = await m.hold(acct, TOOL, amount=30)
    r = await h.release()
    assert (r.released, r.balance, r.held, r.available) == (30, 100, 0, 100)
    with pytest.raises(HoldNotActive):
        await h.settle(1)
    assert [e["k"] for e in journal(m, acct)] == ["grant", "hold_open", "hold_release"]


async def test_extend_moves_the_hold_expiry_from_now(meter_factory: Factory) -> None:
    m = await meter_factory()
    acct = "extend"
    await m.grant(acct, CT, 100)
    h = await m.hold(acct, TOOL, amount=30, ttl_s=10)
    assert h.result.expires_at_ms == m.t0 + 10_000
    m.clock.advance(8000)
    e = await h.extend(10)
    assert e.expires_at_ms == m.t0 + 18_000
    m.clock.now_ms = m.t0 + 17_999
    assert (await wallet(m, acct)).held == 30
    s = await h.settle(5)
    assert (s.charged, s.balance) == (5, 95)


async def test_hold_expires_after_its_ttl_and_can_no_longer_be_settled(
    meter_factory: Factory,
) -> None:
    m = await meter_factory()
    acct = "hold_expiry"
    await m.grant(acct, CT, 100)
    h = await m.hold(acct, TOOL, amount=30, ttl_s=10)
    m.clock.now_ms = m.t0 + 9_999
    assert (await wallet(m, acct)).available == 70
    m.clock.now_ms = m.t0 + 10_000
    w = await wallet(m, acct)
    assert (w.balance, w.held, w.available) == (100, 0, 100)
    with pytest.raises(HoldNotActive):
        await h.settle(10)
    with pytest.raises(HoldNotActive):
        await h.release()
    with pytest.raises(HoldNotActive):
        await h.extend(10)
    assert (await m.charge(acct, TOOL, 100)).balance == 0
    kinds = [e["k"] for e in journal(m, acct)]
    assert kinds.count("hold_expire") == 1 and "hold_settle" not in kinds


async def test_hold_block_releases_the_hold_when_the_body_raises(meter_factory: Factory) -> None:
    m = await meter_factory()
    acct = "ctx"
    await m.grant(acct, CT, 100)
    seen: list[int] = []

    async def body(h: Any) -> None:
        seen.append((await wallet(m, acct)).held)
        raise RuntimeError("generation failed")

    with pytest.raises(RuntimeError):
        await m.in_hold(body, acct, TOOL, amount=30)
    assert seen == [30]
    w = await wallet(m, acct)
    assert (w.balance, w.held, w.available) == (100, 0, 100)
    assert [e["k"] for e in journal(m, acct)] == ["grant", "hold_open", "hold_release"]


async def test_hold_block_settled_inside_charges_once_and_releases_nothing_more(
    meter_factory: Factory,
) -> None:
    m = await meter_factory()
    acct = "ctx_ok"
    await m.grant(acct, CT, 100)

    async def body(h: Any) -> None:
        await h.settle(12)

    await m.in_hold(body, acct, TOOL, amount=30)
    w = await wallet(m, acct)
    assert (w.balance, w.held) == (88, 0)
    assert [e["k"] for e in journal(m, acct)] == ["grant", "hold_open", "charge", "hold_settle"]


async def test_available_stays_above_the_overdraft_limit_when_a_grant_behind_a_hold_expires(
    meter_factory: Factory,
) -> None:
    """SPEC §11.1: available never drops below -overdraft_limit. A hold may be refused up
    front, but once granted, the expiry of the credits it reserved must not overbook."""
    m = await meter_factory()
    acct = "held_expiry"
    await m.grant(acct, CT, 5, expires_at_ms=m.t0 + 1000)
    await m.grant(acct, CT, 1)
    try:
        await m.hold(acct, TOOL, amount=6, ttl_s=60)
    except InsufficientCredits:
        return  # refusing a hold the expiring credits cannot back is a correct answer
    m.clock.now_ms = m.t0 + 1000
    await m.expire_wallet(acct, CT)
    w = await wallet(m, acct)
    assert w.available >= -w.overdraft_limit, w


async def test_hold_stays_settleable_when_the_meter_clock_is_behind_redis_time(
    meter_factory: Factory,
) -> None:
    """SPEC §5: time comes in ARGV so tests control it. A hold made at a controlled time
    8 days before Redis's own clock must still be found by its settle a second later."""
    m = await meter_factory(clock=Clock(now_ms() - 8 * 86_400_000))
    acct = "old_clock"
    await m.grant(acct, CT, 100)
    h = await m.hold(acct, TOOL, amount=30, ttl_s=60)
    m.clock.advance(1000)
    s = await h.settle(10)
    assert (s.charged, s.released, s.balance) == (10, 20, 90)


# --- catalog: kill switch and cost -----------------------------------------------------------


async def test_kill_switch_and_cost_change_apply_to_the_very_next_charge_and_hold(
    meter_factory: Factory,
) -> None:
    m = await meter_factory()
    admin = await meter_factory()  # another process's meter changes the catalog
    acct = "kill"
    await m.grant(acct, CT, 100)
    assert (await m.charge(acct, TOOL)).amount == 1

    await admin.set_tool(TOOL, 1, active=False)
    with pytest.raises(ToolDisabled):
        await m.charge(acct, TOOL)
    with pytest.raises(ToolDisabled):
        await m.hold(acct, TOOL, amount=5)
    assert (await wallet(m, acct)).balance == 99

    await admin.set_tool(TOOL, 7, active=True)
    r = await m.charge(acct, TOOL, 2)
    assert (r.amount, r.balance) == (14, 85)
    h = await m.hold(acct, TOOL)
    assert h.result.amount == 7


# --- idempotency -----------------------------------------------------------------------------


async def test_replayed_requests_return_the_same_result_and_change_nothing(
    meter_factory: Factory,
) -> None:
    m = await meter_factory()
    acct = "replay"
    g = await m.grant(acct, CT, 100, idempotency_key="g1")
    c = await m.charge(acct, TOOL, 3, idempotency_key="c1")
    h = await m.hold(acct, TOOL, amount=10, idempotency_key="h1")
    s = await h.settle(4, idempotency_key="s1")
    rf = await m.refund(c.id, 2, idempotency_key="r1")
    ad = await m.adjust(acct, CT, -5, reason="support", idempotency_key="a1")
    before = snapshot(m.redis, m.keys.prefix)

    g2 = await m.grant(acct, CT, 100, idempotency_key="g1")
    c2 = await m.charge(acct, TOOL, 3, idempotency_key="c1")
    h2 = await m.hold(acct, TOOL, amount=10, idempotency_key="h1")
    s2 = await m.settle(h.id, 4, idempotency_key="s1")
    rf2 = await m.refund(c.id, 2, idempotency_key="r1")
    ad2 = await m.adjust(acct, CT, -5, reason="support", idempotency_key="a1")

    assert snapshot(m.redis, m.keys.prefix) == before
    for first, again in [(g, g2), (c, c2), (h.result, h2.result), (s, s2), (rf, rf2), (ad, ad2)]:
        assert not first.replayed and again.replayed
        fields = [f for f in first.__slots__ if f != "replayed"]
        assert [getattr(first, f) for f in fields] == [getattr(again, f) for f in fields]


async def test_same_idempotency_key_with_other_parameters_is_a_conflict_and_changes_nothing(
    meter_factory: Factory,
) -> None:
    m = await meter_factory()
    acct = "conflict"
    await m.grant(acct, CT, 100)
    await m.charge(acct, TOOL, 1, idempotency_key="k")
    before = snapshot(m.redis, m.keys.prefix)
    with pytest.raises(IdempotencyConflict):
        await m.charge(acct, TOOL, 2, idempotency_key="k")
    with pytest.raises(IdempotencyConflict):
        await m.charge(acct, TOOL, 1, idempotency_key="k", description="other")
    with pytest.raises(IdempotencyConflict):
        await m.adjust(acct, CT, 1, reason="x", idempotency_key="k")
    assert snapshot(m.redis, m.keys.prefix) == before


# --- journal ---------------------------------------------------------------------------------


async def test_journal_has_one_entry_per_balance_change_with_signed_amounts_and_balance_after(
    meter_factory: Factory,
) -> None:
    m = await meter_factory()
    acct = "journal"
    g = await m.grant(acct, CT, 100, category="paid", source="purchase", reference_id="pi_1")
    c = await m.charge(acct, TOOL, 7, idempotency_key="j-c")
    h = await m.hold(acct, TOOL, amount=20)
    s = await h.settle(15)
    rf = await m.refund(c.id, 5, reason="bad output")
    down = await m.adjust(acct, CT, -3, reason="fix")
    up = await m.adjust(acct, CT, 10, reason="goodwill")
    h2 = await m.hold(acct, TOOL, amount=5)
    await h2.release()

    entries = ledger(m, acct)
    assert [(e["id"], e["k"], int(e["m"]), int(e["b"])) for e in entries] == [
        (g.id, "grant", 100, 100),
        (c.id, "charge", -7, 93),
        (s.entry_id, "charge", -15, 78),
        (rf.id, "refund", 5, 83),
        (down.id, "adjustment", -3, 80),
        (up.id, "adjustment", 10, 90),
    ]
    for e in entries:
        assert sum(d for _, d, _ in parts(e["g"])) == int(e["m"])
        assert int(e["ts"]) == m.t0
    assert len({e["id"] for e in entries}) == len(entries)
    assert entries[0]["src"] == "purchase" and entries[0]["ref"] == "pi_1"
    assert entries[1]["tool"] == TOOL and entries[1]["q"] == "7" and entries[1]["ik"] == "j-c"
    assert entries[3]["ref"] == c.id
    assert (await wallet(m, acct)).balance == 90
    assert [e["k"] for e in journal(m, acct) if e["k"] not in LEDGER_KINDS] == [
        "hold_open",
        "hold_settle",
        "hold_open",
        "hold_release",
    ]


async def test_failed_operations_write_no_journal_entry(meter_factory: Factory) -> None:
    m = await meter_factory()
    acct = "nojournal"
    await m.grant(acct, CT, 2)
    before = journal(m, acct)
    with pytest.raises(InsufficientCredits):
        await m.charge(acct, TOOL, 3)
    with pytest.raises(InsufficientCredits):
        await m.hold(acct, TOOL, amount=3)
    assert journal(m, acct) == before


async def test_concurrent_charges_on_two_wallets_keep_each_journal_consistent(
    meter_factory: Factory,
) -> None:
    """Through the async client these go out as batched charge-script calls."""
    m = await meter_factory(cost=2)
    await m.grant("a1", CT, 15)
    await m.grant("a2", CT, 9, expires_at_ms=m.t0 + 10)
    await m.grant("a2", CT, 4)
    m.clock.now_ms = m.t0 + 10  # a2's first grant expires inside the batch
    calls = [
        m.charge(acct, TOOL, idempotency_key=f"{acct}-{i % 5}")
        for i in range(20)
        for acct in ("a1", "a2")
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(
        not isinstance(x, BaseException) or isinstance(x, InsufficientCredits) for x in results
    ), results
    for acct, expected in (("a1", 5), ("a2", 2)):
        entries = ledger(m, acct)
        charges = [e for e in entries if e["k"] == "charge"]
        assert len(charges) == expected
        running = 0
        for e in entries:
            running += int(e["m"])
            assert int(e["b"]) == running, e
        w = await wallet(m, acct)
        assert (w.balance, w.available) == (running, running)
    assert (await wallet(m, "a1")).balance == 5 and (await wallet(m, "a2")).balance == 0


async def test_concurrent_charges_each_see_the_balance_they_left(meter_factory: Factory) -> None:
    m = await meter_factory()
    await m.grant("loop", CT, 5)
    results = await asyncio.gather(*(m.charge("loop", TOOL) for _ in range(5)))
    assert sorted(r.balance for r in results) == [0, 1, 2, 3, 4]


# --- clawback (Stripe refunds and disputes) --------------------------------------------------


async def test_clawback_takes_only_the_difference_of_the_running_total(
    meter_factory: Factory,
) -> None:
    m = await meter_factory()
    acct = "refunded"
    welcome = (await m.grant(acct, CT, 30)).grant_id
    bought = (await m.grant(acct, CT, 100, category="paid", grant_id="g-purchase")).grant_id
    first = await m.clawback(acct, CT, 40, reference_id="purchase-1", grant_id=bought)
    assert (first.amount, first.total, first.balance) == (40, 40, 90)
    (entry,) = [e for e in journal(m, acct) if e["id"] == first.id]
    assert entry["k"] == "clawback" and int(entry["m"]) == -40
    assert parts(entry["g"]) == [(bought, -40, 60)] and entry["ref"] == "purchase-1"

    stale = await m.clawback(acct, CT, 25, reference_id="purchase-1", grant_id=bought)
    again = await m.clawback(acct, CT, 40, reference_id="purchase-1", grant_id=bought)
    assert (stale.id, stale.amount, again.id, again.amount) == (None, 0, None, 0)
    assert (stale.total, again.total, again.balance) == (40, 40, 90)

    full = await m.clawback(acct, CT, 100, reference_id="purchase-1", grant_id=bought)
    assert (full.amount, full.total, full.balance) == (60, 100, 30)
    assert await remaining(m, acct) == {welcome: 30}
    assert len([e for e in journal(m, acct) if e["k"] == "clawback"]) == 2


async def test_clawback_after_the_credits_were_spent_leaves_debt(meter_factory: Factory) -> None:
    m = await meter_factory()
    acct = "disputer"
    bought = (await m.grant(acct, CT, 50, category="paid")).grant_id
    await m.charge(acct, TOOL, 45)
    r = await m.clawback(acct, CT, 50, reference_id="purchase-2", grant_id=bought)
    assert (r.amount, r.balance) == (50, -45)
    w = await wallet(m, acct)
    assert (w.balance, w.debt, w.grants) == (-45, 45, ())
    (entry,) = [e for e in journal(m, acct) if e["id"] == r.id]
    assert parts(entry["g"]) == [(bought, -5, 0), ("debt", -45, -45)]
    # A later purchase pays the debt first.
    assert (await m.grant(acct, CT, 100, category="paid")).balance == 55


async def test_clawback_trusts_the_total_sql_knows_after_redis_lost_its_record(
    meter_factory: Factory,
) -> None:
    m = await meter_factory()
    acct = "lost-record"
    await m.grant(acct, CT, 100, category="paid")
    r = await m.clawback(acct, CT, 60, reference_id="purchase-3", known_total=50)
    assert (r.amount, r.total, r.balance) == (10, 60, 90)
