"""One record per charge (lua/includes/charge_record): it answers the charge's replays and
its refunds, at the charge key (a charge without its own idempotency key) or at the charge's
idempotency key with a pointer at the charge key. Records of the previous format (a plain
charge record beside an idempotency record, alive 25 h after an upgrade) keep working."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from meter import IdempotencyConflict, Meter, OverRefund, ops, signatures, wire
from meter.errors import Code
from meter.models import ChargePart, ChargeRecord
from tests.meter.helpers import evalsha, make_meter

CT = "credits"
TOOL = "GPT"
COST = 10
ACCT = "rec-acct"
# Both keys of a charge took ~430 B before the one record (idempotency ~250 + charge ~180);
# the one record takes ~230 B here (small balances): the bound sits between.
CHARGE_KEYS_BYTES_MAX = 300
CHARGES_COUNTED = 10  # charges whose commands are counted


@pytest.fixture
def meter(redis_url: str, key_prefix: str) -> Iterator[Meter]:
    m = make_meter(redis_url, key_prefix)
    m.set_tool(TOOL, COST, CT)
    m.grant(ACCT, CT, 1000, category="paid")
    try:
        yield m
    finally:
        m.redis.close()


def _eval(m: Meter, idempotency_key: str | None = None) -> ops.Eval:
    request = next(ops.charge(m._env, ACCT, TOOL, idempotency_key=idempotency_key))
    assert isinstance(request, ops.Eval), request
    return request


def _run(m: Meter, ev: ops.Eval) -> list[Any]:
    reply: list[Any] = evalsha(m.redis, "charge", ev.keys, ev.args)[0]
    return reply


def _answer(reply: list[Any]) -> list[str]:
    """The reply's entry id, amount, balance, available, held and breakdown, as text."""
    return [v.decode() if isinstance(v, bytes) else str(v) for v in reply[1:7]]


def _arg(ev: ops.Eval, name: str) -> str:
    head = signatures.CHARGE.arg_head
    group = signatures.CHARGE.args[head]
    assert isinstance(group, signatures.Group)
    return ev.args[head + group.fields.index(name)]


def _bytes(r: redis.Redis, *keys: str) -> int:
    return sum(int(r.memory_usage(k, samples=0) or 0) for k in keys)


def test_a_charge_without_its_own_key_keeps_one_record_for_replays_and_refunds(
    meter: Meter,
) -> None:
    m, k = meter, meter.keys
    ev = _eval(m)
    first = _run(m, ev)
    assert first[0] == Code.OK
    charge_id = first[1].decode()
    record, idem = k.charge(k.bucket(ACCT), charge_id), k.idempotency(ACCT, charge_id)
    assert m.redis.exists(record) and not m.redis.exists(idem)
    assert _bytes(m.redis, record, idem) <= CHARGE_KEYS_BYTES_MAX
    again = _run(m, ev)  # the same call retried
    assert again[0] == Code.REPLAYED and _answer(again) == _answer(first)
    assert m.refund(charge_id, 4).refunded_total == 4
    assert m.refund(charge_id).refunded_total == COST
    with pytest.raises(OverRefund):
        m.refund(charge_id, 1)
    assert _answer(_run(m, ev)) == _answer(first)  # refunds leave the replay's answer
    assert m.balance(ACCT, [CT]).wallets[0].balance == 1000


def test_a_charge_with_its_own_key_keeps_its_record_there_and_a_pointer_at_its_id(
    meter: Meter,
) -> None:
    m, k = meter, meter.keys
    c = m.charge(ACCT, TOOL, 2, idempotency_key="own-1")
    pointer = m.redis.get(k.charge(k.bucket(ACCT), c.id))
    assert isinstance(pointer, bytes)
    assert wire.charge_record_owner(pointer.decode()) == wire.ChargeOwner(ACCT, CT, "own-1")
    again = m.charge(ACCT, TOOL, 2, idempotency_key="own-1")
    assert again.replayed and (again.id, again.amount, again.balance, again.breakdown) == (
        c.id,
        c.amount,
        c.balance,
        c.breakdown,
    )
    with pytest.raises(IdempotencyConflict):
        m.charge(ACCT, TOOL, 3, idempotency_key="own-1")
    assert m.refund(c.id, 5).refunded_total == 5
    assert m.refund(c.id).refunded_total == 2 * COST
    assert m.charge(ACCT, TOOL, 2, idempotency_key="own-1").id == c.id
    with pytest.raises(IdempotencyConflict):  # another operation's key is not a charge's
        m.grant(ACCT, CT, 5, idempotency_key="own-1")


def test_a_charge_without_its_own_key_costs_one_get_and_one_set(
    meter: Meter, client: redis.Redis
) -> None:
    m = meter
    m.charge(ACCT, TOOL)  # warm: the client knows the tool's credit type

    def calls() -> dict[str, int]:
        stats = client.info("commandstats")
        return {
            name: int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("get", "set")
        }

    before = calls()
    for _ in range(CHARGES_COUNTED):
        m.charge(ACCT, TOOL)
    after = calls()
    assert {n: after[n] - before[n] for n in after} == {
        "get": CHARGES_COUNTED,
        "set": CHARGES_COUNTED,
    }


def _to_previous_format(m: Meter, ev: ops.Eval, reply: list[Any], idem_key: str) -> str:
    """Rewrites a charge's keys as the previous version wrote them -> its id."""
    k = m.keys
    charge_id = reply[1].decode()
    parts = wire.parse_breakdown(reply[6].decode())
    record = ChargeRecord(
        ACCT,
        CT,
        TOOL,
        int(reply[2]),
        0,
        tuple(ChargePart(p.grant_id, -p.delta, 50, 0, "p") for p in parts),
    )
    old_idem = "\x1f".join([_arg(ev, "fingerprint"), *_answer(reply)])
    m.redis.set(k.charge(k.bucket(ACCT), charge_id), wire.charge_record_value(record), ex=3600)
    m.redis.set(k.idempotency(ACCT, idem_key), old_idem, ex=3600)
    return charge_id


@pytest.mark.parametrize("own_key", [None, "old-1"])
def test_records_of_the_previous_format_still_replay_and_refund(
    meter: Meter, own_key: str | None
) -> None:
    m, k = meter, meter.keys
    ev = _eval(m, own_key)
    first = _run(m, ev)
    charge_id = _to_previous_format(m, ev, first, own_key or first[1].decode())
    again = _run(m, ev)
    assert again[0] == Code.REPLAYED and _answer(again) == _answer(first)
    assert m.refund(charge_id, 3).refunded_total == 3
    plain = m.redis.get(k.charge(k.bucket(ACCT), charge_id))
    assert isinstance(plain, bytes)  # still the plain format, its total updated
    assert plain.decode().split(wire.RECORD_SEP)[3:5] == [str(COST), "3"]
    assert m.refund(charge_id).refunded_total == COST
    assert _answer(_run(m, ev)) == _answer(first)
    assert m.balance(ACCT, [CT]).wallets[0].balance == 1000
