"""Every balance or hold change is published by its script on the bucket's events channel:
one message per changed wallet per script call (a batched charge call publishes each wallet's
last state once) with the wallet's new state and the id of the journal entry that recorded
it; replays and refused requests that changed nothing publish nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.client

from meter import HoldNotActive, InsufficientCredits, Meter, ops, signatures
from meter.bounds import CREDITS_MAX
from tests.meter.helpers import Clock, evalsha, journal_entries, make_async_meter, make_meter

CT = "credits"
TOOL = "GEN"
COST = 10
ACCT = "pub-acct"
RECEIVE_TIMEOUT_S = 2.0  # a message is local and immediate; this only bounds a failure
QUIET_S = 0.1  # how long "no further message" is waited for


class Events:
    """A subscription to one bucket's events channel."""

    def __init__(self, pubsub: redis.client.PubSub) -> None:
        self.pubsub = pubsub

    def take(self, n: int) -> list[dict[str, Any]]:
        """The next n messages, then checks that no other one follows."""
        out = [self._next(RECEIVE_TIMEOUT_S) for _ in range(n)]
        assert None not in out, f"only {out.index(None)} of {n} messages arrived"
        extra = self._next(QUIET_S)
        assert extra is None, extra
        return out  # type: ignore[return-value]

    def one(self) -> dict[str, Any]:
        return self.take(1)[0]

    def drain(self) -> list[dict[str, Any]]:
        """Every message until none arrives for QUIET_S."""
        out = []
        while (msg := self._next(QUIET_S)) is not None:
            out.append(msg)
        return out

    def _next(self, timeout_s: float) -> dict[str, Any] | None:
        msg = self.pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout_s)
        return None if msg is None else json.loads(msg["data"])


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def meter(redis_url: str, key_prefix: str, clock: Clock) -> Iterator[Meter]:
    m = make_meter(redis_url, key_prefix, clock)
    m.set_tool(TOOL, COST, CT)
    try:
        yield m
    finally:
        m.redis.close()


@pytest.fixture
def events(client: redis.Redis, meter: Meter) -> Iterator[Events]:
    pubsub = client.pubsub()
    pubsub.subscribe(meter.keys.events(meter.keys.bucket(ACCT)))
    assert pubsub.get_message(timeout=RECEIVE_TIMEOUT_S)["type"] == "subscribe"
    try:
        yield Events(pubsub)
    finally:
        pubsub.close()


def state(balance: int, held: int, entry_id: str, kind: str, account: str = ACCT) -> dict:
    return {
        "account_id": account,
        "credit_type": CT,
        "available": balance - held,
        "held": held,
        "balance": balance,
        "entry_id": entry_id,
        "kind": kind,
    }


def journal_kinds(m: Meter, account: str = ACCT) -> dict[str, set[str]]:
    """Entry id -> kinds journaled under it (hold entries share the hold's id)."""
    out: dict[str, set[str]] = {}
    entries: Any = journal_entries(m.redis, m.keys.journal(m.keys.bucket(account)))
    for _, fields in entries:
        out.setdefault(fields[b"id"].decode(), set()).add(fields[b"k"].decode())
    return out


def test_every_operation_publishes_one_event_with_the_new_state(
    meter: Meter, events: Events, clock: Clock
) -> None:
    m = meter
    g = m.grant(ACCT, CT, 100, category="paid")
    assert events.one() == state(100, 0, g.id, "grant")

    c = m.charge(ACCT, TOOL, 2)
    assert events.one() == state(80, 0, c.id, "charge")

    h = m.hold(ACCT, TOOL, amount=30)
    assert events.one() == state(80, 30, h.id, "hold_open")
    h.extend(600)
    assert events.one() == state(80, 30, h.id, "hold_extend")
    s = h.settle(25)
    assert events.one() == state(55, 0, s.entry_id, "charge")

    h0 = m.hold(ACCT, TOOL, amount=5)
    assert events.one() == state(55, 5, h0.id, "hold_open")
    h0.settle(0)  # nothing charged: the hold's own entry names the change
    assert events.one() == state(55, 0, h0.id, "hold_settle")

    h2 = m.hold(ACCT, TOOL)
    assert events.one() == state(55, 10, h2.id, "hold_open")
    h2.release()
    assert events.one() == state(55, 0, h2.id, "hold_release")

    f = m.refund(c.id, 5)
    assert events.one() == state(60, 0, f.id, "refund")
    a = m.adjust(ACCT, CT, -7, reason="fix")
    assert events.one() == state(53, 0, a.id, "adjustment")
    up = m.adjust(ACCT, CT, 4, reason="goodwill")
    assert events.one() == state(57, 0, up.id, "adjustment")

    m.grant(ACCT, CT, 3, expires_at_ms=clock.now_ms + 1000)
    assert events.one()["balance"] == 60
    clock.advance(1000)
    assert m.expire_wallet(ACCT, CT).grants_expired == 1
    expired = events.one()
    assert expired == state(57, 0, expired["entry_id"], "expire")

    # Every event names the journal entry that recorded its change.
    journal = journal_kinds(m)
    for ev_id, kind in [
        (g.id, "grant"),
        (c.id, "charge"),
        (h.id, "hold_open"),
        (h.id, "hold_extend"),
        (s.entry_id, "charge"),
        (h0.id, "hold_settle"),
        (h2.id, "hold_release"),
        (f.id, "refund"),
        (a.id, "adjustment"),
        (expired["entry_id"], "expire"),
    ]:
        assert kind in journal[ev_id], (ev_id, kind)


def test_replays_and_refusals_that_change_nothing_publish_nothing(
    meter: Meter, events: Events
) -> None:
    m = meter
    m.grant(ACCT, CT, 15, idempotency_key="g")
    first = m.charge(ACCT, TOOL, idempotency_key="c")
    assert len(events.take(2)) == 2
    assert m.charge(ACCT, TOOL, idempotency_key="c").replayed
    assert m.grant(ACCT, CT, 15, idempotency_key="g").replayed
    with pytest.raises(InsufficientCredits):
        m.charge(ACCT, TOOL, 5)
    with pytest.raises(InsufficientCredits):
        m.hold(ACCT, TOOL, amount=6)
    assert m.expire_wallet(ACCT, CT).grants_expired == 0
    assert events.take(0) == []
    assert m.balance(ACCT, [CT]).wallets[0].balance == first.balance


def test_a_refused_charge_still_publishes_the_expiry_it_saved(
    meter: Meter, events: Events, clock: Clock
) -> None:
    m = meter
    m.grant(ACCT, CT, 50, expires_at_ms=clock.now_ms + 1000)
    m.grant(ACCT, CT, 5)
    events.take(2)
    clock.advance(1000)
    with pytest.raises(InsufficientCredits):
        m.charge(ACCT, TOOL)
    ev = events.one()
    assert ev == state(5, 0, ev["entry_id"], "expire")
    assert "expire" in journal_kinds(m)[ev["entry_id"]]


def test_an_expired_hold_refused_at_settle_publishes_its_expiry(
    meter: Meter, events: Events, clock: Clock
) -> None:
    m = meter
    m.grant(ACCT, CT, 50)
    h = m.hold(ACCT, TOOL, ttl_s=1)
    events.take(2)
    clock.advance(1000)
    with pytest.raises(HoldNotActive):
        h.settle()
    assert events.one() == state(50, 0, h.id, "hold_expire")


def test_numbers_up_to_credits_max_are_exact(meter: Meter, events: Events) -> None:
    g = meter.grant(ACCT, CT, CREDITS_MAX)
    assert events.one() == state(CREDITS_MAX, 0, g.id, "grant")


def test_other_buckets_do_not_hear_the_account(
    meter: Meter, client: redis.Redis, events: Events
) -> None:
    k = meter.keys
    other = next(a for a in (f"o{i}" for i in range(100)) if k.bucket(a) != k.bucket(ACCT))
    meter.grant(other, CT, 5)
    assert events.take(0) == []
    same = next(a for a in (f"s{i}" for i in range(1000)) if k.bucket(a) == k.bucket(ACCT))
    g = meter.grant(same, CT, 5)
    assert events.one() == state(5, 0, g.id, "grant", account=same)


async def test_a_batched_async_charge_publishes_each_wallets_state_in_order(
    redis_url: str, key_prefix: str, meter: Meter, events: Events
) -> None:
    k = meter.keys
    neighbour = next(a for a in (f"n{i}" for i in range(1000)) if k.bucket(a) == k.bucket(ACCT))
    meter.grant(ACCT, CT, 1000)
    meter.grant(neighbour, CT, 1000)
    events.take(2)
    am = make_async_meter(redis_url, key_prefix)
    try:
        await am.charge(ACCT, TOOL)  # warm: wallets and tool credit type known
        await am.charge(neighbour, TOOL)
        events.take(2)
        results = await asyncio.gather(
            *(am.charge(ACCT if i % 2 else neighbour, TOOL) for i in range(40))
        )
    finally:
        await am.aclose()
    got = events.drain()
    ids = {r.id: r for r in results}
    for account in (ACCT, neighbour):  # each account's events count down to its last state
        mine = [e for e in got if e["account_id"] == account]
        assert mine, account
        for e in mine:
            r = ids[e["entry_id"]]
            assert e == state(r.balance, 0, r.id, "charge", account=account)
        balances = [e["balance"] for e in mine]
        assert balances == sorted(balances, reverse=True) and len(set(balances)) == len(mine)
        assert balances[-1] == 1000 - 10 - 10 * 20


def test_one_charge_script_call_of_many_charges_publishes_each_wallet_once(
    meter: Meter, events: Events
) -> None:
    """The batch as the async client merges it (shared keys once, then each charge's keys),
    sent as one script call: one event per changed wallet, its state after the call, named
    by the last charge that changed it; charges that fail publish nothing."""
    meter.grant(ACCT, CT, 25)
    events.take(1)
    evals = [_first_eval(ops.charge(meter._env, ACCT, TOOL, q)) for q in (1, 2, 1, 1)]
    key_head, arg_head = signatures.CHARGE.key_head, signatures.CHARGE.arg_head
    keys, args = evals[0].keys[:key_head], evals[0].args[:arg_head]
    for ev in evals:
        keys += ev.keys[key_head:]
        args += ev.args[arg_head:]
    replies = evalsha(meter.redis, "charge", keys, args)
    assert [r[0] for r in replies] == [0, -6, 0, -6]  # 25 -> 15, (20 > 15), 5, (10 > 5)
    group = signatures.CHARGE.args[arg_head]
    assert isinstance(group, signatures.Group)
    ids = [ev.args[arg_head + group.fields.index("entry_id")] for ev in evals]
    assert events.take(1) == [state(5, 0, ids[2], "charge")]


def _first_eval(op: ops.Op[Any]) -> ops.Eval:
    request = next(op)
    assert isinstance(request, ops.Eval), request
    return request
