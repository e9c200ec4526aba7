"""Balance alert flags (lua/includes/crossings.lua): the journal entry of a change that
lowers available across the wallet's low threshold carries "l", across zero "d", across the
top-up threshold "t"; a change that stays on one side carries nothing, and going back above
re-arms the next crossing. Checked through the sync and async clients on real Redis."""

from __future__ import annotations

import asyncio

import pytest

from meter import Meter
from meter.errors import InvalidArgument
from meter.wire import Alert, Alerts, JournalField, parse_alerts
from tests.meter.helpers import Clock, journal_entries, make_async_meter, make_meter

ACCT, CT = "alerts-acct", "credits"


def _alerts(m: Meter, entry_id: str) -> Alerts | None:
    """The ALERTS field of the journal entry with this id (its last one: a hold's id names
    all of its entries)."""
    found = None
    for _, fields in journal_entries(m.redis, m.keys.journal(m.keys.bucket(ACCT))):
        if fields[JournalField.ID.encode()] == entry_id.encode():
            raw = fields.get(JournalField.ALERTS.encode())
            found = parse_alerts(raw.decode() if raw else None)
    return found


def _flags(m: Meter, entry_id: str) -> str:
    alerts = _alerts(m, entry_id)
    return "" if alerts is None else "".join(sorted(a.value for a in alerts.flags))


@pytest.fixture
def m(redis_url: str, key_prefix: str) -> Meter:
    meter = make_meter(redis_url, key_prefix)
    meter.set_tool("GPT", 10)
    meter.grant(ACCT, CT, 100)
    return meter


def test_a_charge_crossing_the_low_threshold_is_flagged_once(m: Meter) -> None:
    assert m.set_threshold(ACCT, CT, "low", 50) is True  # the wallet is loaded
    assert _flags(m, m.charge(ACCT, "GPT", 3).id) == ""  # 100 -> 70
    c = m.charge(ACCT, "GPT", 3)  # 70 -> 40: crosses 50
    assert _alerts(m, c.id) == Alerts(frozenset({Alert.LOW}), 40, 50)
    assert _flags(m, m.charge(ACCT, "GPT", 2).id) == ""  # 40 -> 20: below already


def test_landing_exactly_on_the_threshold_is_not_below_it(m: Meter) -> None:
    m.set_threshold(ACCT, CT, "low", 50)
    assert _flags(m, m.charge(ACCT, "GPT", 5).id) == ""  # 100 -> 50
    assert _flags(m, m.charge(ACCT, "GPT", 1).id) == "l"  # 50 -> 40


def test_a_grant_back_above_rearms_the_alert(m: Meter) -> None:
    m.set_threshold(ACCT, CT, "low", 50)
    assert _flags(m, m.charge(ACCT, "GPT", 6).id) == "l"  # 100 -> 40
    g = m.grant(ACCT, CT, 30)  # 40 -> 70: a raise is never flagged
    assert _flags(m, g.id) == ""
    assert _flags(m, m.charge(ACCT, "GPT", 3).id) == "l"  # 70 -> 40 again


def test_depleted_needs_no_threshold_and_fires_at_zero(m: Meter) -> None:
    assert _flags(m, m.charge(ACCT, "GPT", 9).id) == ""  # 100 -> 10
    c = m.charge(ACCT, "GPT", 1)  # 10 -> 0
    assert _alerts(m, c.id) == Alerts(frozenset({Alert.DEPLETED}), 0, None)


def test_one_charge_can_cross_low_topup_and_zero_at_once(m: Meter) -> None:
    m.set_threshold(ACCT, CT, "low", 50)
    m.set_threshold(ACCT, CT, "topup", 80)
    c = m.charge(ACCT, "GPT", 10)  # 100 -> 0
    assert _alerts(m, c.id) == Alerts(frozenset({Alert.LOW, Alert.DEPLETED, Alert.TOPUP}), 0, 50)


def test_a_removed_threshold_flags_nothing(m: Meter) -> None:
    m.set_threshold(ACCT, CT, "low", 50)
    m.set_threshold(ACCT, CT, "low", None)
    assert _flags(m, m.charge(ACCT, "GPT", 6).id) == ""


def test_hold_settle_above_it_and_negative_adjustment_are_flagged(m: Meter) -> None:
    m.set_threshold(ACCT, CT, "low", 50)
    h = m.hold(ACCT, "GPT", amount=60)  # available 100 -> 40
    assert _flags(m, h.id) == "l"
    m.grant(ACCT, CT, 20)  # available 60
    s = h.settle(75)  # available 60 -> 45: the hold's 60 back, 75 charged
    assert _flags(m, s.entry_id) == "l"
    a = m.adjust(ACCT, CT, -45, reason="test")  # 45 -> 0
    assert _flags(m, a.id) == "d"


def test_a_settle_within_the_hold_raises_available_and_is_not_flagged(m: Meter) -> None:
    m.set_threshold(ACCT, CT, "low", 50)
    h = m.hold(ACCT, "GPT", amount=60)
    assert _flags(m, h.settle(30).entry_id) == ""  # available 40 -> 70


def test_an_expiring_grant_is_flagged(redis_url: str, key_prefix: str) -> None:
    clock = Clock()
    m = make_meter(redis_url, key_prefix, clock=clock)
    m.grant(ACCT, CT, 100)
    m.grant(ACCT, CT, 50, expires_at_ms=clock.now_ms + 1_000)
    m.set_threshold(ACCT, CT, "low", 120)
    clock.advance(2_000)
    assert m.expire_wallet(ACCT, CT).grants_expired == 1
    expired = [
        f
        for _, f in journal_entries(m.redis, m.keys.journal(m.keys.bucket(ACCT)))
        if f[b"k"] == b"expire"
    ]
    assert [f[JournalField.ALERTS.encode()] for f in expired] == [b"l|100|120"]


def test_a_clawback_is_flagged(m: Meter) -> None:
    r = m.clawback(ACCT, CT, 100, reference_id="re_1")
    assert r.id is not None and _flags(m, r.id) == "d"


def test_a_threshold_set_before_the_wallet_loads_is_in_force_once_it_does(
    redis_url: str, key_prefix: str
) -> None:
    m = make_meter(redis_url, key_prefix)
    m.set_tool("GPT", 10)
    assert m.set_threshold("later", CT, "low", 50) is False  # not loaded: the account key keeps it
    m.grant("later", CT, 60)
    bucket = m.keys.bucket("later")
    assert m.redis.hget(m.keys.wallet("later", CT), "lt") == b"50"
    c = m.charge("later", "GPT", 2)
    entries = journal_entries(m.redis, m.keys.journal(bucket))
    assert [f[JournalField.ALERTS.encode()] for _, f in entries if f[b"id"] == c.id.encode()] == [
        b"l|40|50"
    ]


@pytest.mark.parametrize("bad", [0, -1, 2**53, 1.5])
def test_a_bad_threshold_is_refused_before_redis(m: Meter, bad: object) -> None:
    with pytest.raises(InvalidArgument):
        m.set_threshold(ACCT, CT, "low", bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        m.set_threshold(ACCT, CT, "high", 10)


def test_each_charge_of_an_async_batch_is_judged_on_its_own(
    redis_url: str, key_prefix: str, m: Meter
) -> None:
    m.set_threshold(ACCT, CT, "low", 50)

    async def run() -> list[str]:
        am = make_async_meter(redis_url, key_prefix)
        try:
            charges = await asyncio.gather(*(am.charge(ACCT, "GPT", 2) for _ in range(4)))
        finally:
            await am.aclose()
        return [c.id for c in charges]

    flagged = [_flags(m, entry_id) for entry_id in asyncio.run(run())]
    assert sorted(flagged) == ["", "", "", "l"]  # 100 -> 80 -> 60 -> 40 -> 20
