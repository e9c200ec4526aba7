"""A charge's dry run (Meter.charge(..., dry_run=True), Autumn's `check`): the charge script's
own checks answer, and nothing in Redis changes — no journal entry, no idempotency record, no
balance event, no wallet write — also when dry runs race real charges in one batch."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis
from sqlalchemy import Engine, select

from meter import InvalidArgument, Keys, Meter, ToolDisabled, UnknownTool
from meter.loaders import NewAccountLoader
from meter.models import ChargeCheck, Tool, WalletSnapshot
from meter.redis_conn import sync_client
from sync.loader import SqlLoader
from sync.models import T_ACCOUNTS
from tests.meter.helpers import Clock, make_async_meter, make_meter, snapshot

CT = "credits"
TOOL = "GEN"


class OverdraftLoader(NewAccountLoader):
    """A new wallet with an overdraft limit of 5."""

    def load_wallet(
        self, account_id: str, credit_type: str, *, create: bool = True
    ) -> WalletSnapshot:
        return WalletSnapshot(overdraft_limit=5)


def test_dry_run_that_would_succeed_answers_the_price_and_changes_nothing(
    redis_url: str, redis_sync: redis.Redis, key_prefix: str
) -> None:
    m = make_meter(redis_url, key_prefix)
    m.set_tool(TOOL, 3)
    m.grant("acct", CT, 10)
    before = snapshot(redis_sync, key_prefix)
    with redis_sync.pubsub() as events:
        events.psubscribe(f"{key_prefix}:*")
        events.get_message(timeout=1)  # the subscription's confirmation
        check = m.charge("acct", TOOL, 2, dry_run=True)
        assert events.get_message(timeout=0.2) is None  # no balance event
    assert check == ChargeCheck(
        account_id="acct",
        tool=TOOL,
        credit_type=CT,
        would_succeed=True,
        amount=6,
        balance=10,
        available=10,
    )
    assert snapshot(redis_sync, key_prefix) == before


def test_dry_run_that_would_fail_gives_the_reason_and_changes_nothing(
    redis_url: str, redis_sync: redis.Redis, key_prefix: str
) -> None:
    m = make_meter(redis_url, key_prefix)
    m.set_tool(TOOL, 3)
    m.grant("acct", CT, 10)
    before = snapshot(redis_sync, key_prefix)
    check = m.charge("acct", TOOL, 4, dry_run=True)
    assert (check.would_succeed, check.reason) == (False, "insufficient-credits")
    assert (check.amount, check.balance, check.available) == (12, 10, 10)
    assert snapshot(redis_sync, key_prefix) == before


def test_dry_run_applies_the_overdraft_limit_as_the_charge_does(
    redis_url: str, key_prefix: str
) -> None:
    m = make_meter(redis_url, key_prefix, loader=OverdraftLoader())
    m.set_tool(TOOL, 1)
    assert m.charge("od", TOOL, 5, dry_run=True).would_succeed
    assert not m.charge("od", TOOL, 6, dry_run=True).would_succeed
    m.charge("od", TOOL, 5)
    assert m.balance("od", [CT]).wallet(CT).balance == -5


def test_dry_run_leaves_out_expired_grants_without_journaling_their_expiry(
    redis_url: str, redis_sync: redis.Redis, key_prefix: str
) -> None:
    clock = Clock()
    m = make_meter(redis_url, key_prefix, clock=clock)
    m.set_tool(TOOL, 1)
    m.grant("acct", CT, 10, expires_at_ms=clock.now_ms + 1000)
    m.grant("acct", CT, 3)
    clock.advance(2000)
    before = snapshot(redis_sync, key_prefix)
    check = m.charge("acct", TOOL, 4, dry_run=True)
    assert (check.would_succeed, check.balance, check.available) == (False, 3, 3)
    assert snapshot(redis_sync, key_prefix) == before
    assert m.charge("acct", TOOL, 3, dry_run=True).would_succeed


def test_dry_run_of_an_unknown_or_disabled_tool_raises_what_the_charge_raises(
    redis_url: str, key_prefix: str
) -> None:
    m = make_meter(redis_url, key_prefix)
    m.set_tool(TOOL, 1)
    m.set_tool("OFF", 1, active=False)
    m.grant("acct", CT, 10)
    for tool, error in (("NOPE", UnknownTool), ("OFF", ToolDisabled)):
        with pytest.raises(error):
            m.charge("acct", tool, dry_run=True)
        with pytest.raises(error):
            m.charge("acct", tool)


def test_dry_run_takes_no_idempotency_key(redis_url: str, key_prefix: str) -> None:
    m = make_meter(redis_url, key_prefix)
    with pytest.raises(InvalidArgument):
        m.charge("acct", TOOL, dry_run=True, idempotency_key="k1")  # type: ignore[call-overload]


def test_dry_run_learns_a_tools_credit_type_as_the_charge_does(
    redis_url: str, key_prefix: str
) -> None:
    m = make_meter(redis_url, key_prefix)
    m.set_tool("VID", 2, credit_type="video_seconds")
    m.grant("acct", "video_seconds", 5)
    check = m.charge("acct", "VID", 2, dry_run=True)
    assert (check.credit_type, check.would_succeed, check.amount) == ("video_seconds", True, 4)


async def test_dry_runs_racing_real_charges_in_one_batch_never_change_the_balance(
    redis_url: str, redis_sync: redis.Redis, key_prefix: str
) -> None:
    m = make_async_meter(redis_url, key_prefix)
    try:
        await m.set_tool(TOOL, 1)
        await m.grant("acct", CT, 10)
        calls = []
        for _ in range(100):
            calls.append(m.charge("acct", TOOL))
            calls.append(m.charge("acct", TOOL, dry_run=True))
        results = await asyncio.gather(*calls, return_exceptions=True)
        wallet = (await m.balance("acct", [CT])).wallet(CT)
    finally:
        await m.aclose()
    charged = [r for r in results[0::2] if not isinstance(r, BaseException)]
    checks = results[1::2]
    assert len(charged) == 10
    assert (wallet.balance, wallet.available) == (0, 0)
    assert all(isinstance(c, ChargeCheck) for c in checks), checks[:3]
    # each check saw the wallet between two charges: would succeed exactly while credits left
    assert all(c.would_succeed == (c.available >= 1) for c in checks if isinstance(c, ChargeCheck))
    journal = redis_sync.xlen(m.keys.journal(m.keys.bucket("acct")))
    assert journal == 11  # the grant and the ten charges


def test_dry_run_on_an_account_never_seen_answers_an_empty_wallet_and_creates_nothing(
    redis_url: str, redis_sync: redis.Redis, key_prefix: str, engine: Engine
) -> None:
    keys = Keys(prefix=key_prefix)
    m = Meter(sync_client(redis_url), keys=keys, loader=SqlLoader(engine, keys))
    m.set_tools(
        [Tool(name=TOOL, cost=2, credit_type=CT), Tool(name="FREE", cost=0, credit_type=CT)]
    )
    acct = f"new-{uuid.uuid4().hex[:10]}"
    before = snapshot(redis_sync, key_prefix)
    check = m.charge(acct, TOOL, dry_run=True)
    assert (check.would_succeed, check.reason, check.amount, check.balance) == (
        False,
        "insufficient-credits",
        2,
        0,
    )
    assert m.charge(acct, "FREE", dry_run=True).would_succeed
    assert snapshot(redis_sync, key_prefix) == before
    with engine.connect() as conn:
        assert conn.execute(select(T_ACCOUNTS).where(T_ACCOUNTS.c.id == acct)).first() is None
