"""balance.low, balance.depleted and hold.expired end to end on real Redis and SQL: a
threshold set through sync.thresholds, charges flagged by the scripts, the flusher emitting
in its transaction, and a loopback receiver verifying each delivery's signature. A flush
replayed after a crash before its XACK sends nothing twice."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import Engine, select

from meter import Meter, Tool
from meter.errors import InvalidArgument
from meter.keys import Keys
from meter.times import now_ms
from sync import thresholds
from sync.db import write_transaction
from sync.flush import Flusher
from sync.journal import parse
from sync.models import T_AUDIT
from sync.webhooks import create_endpoint, delete_endpoint
from sync.writer import write_entries
from tests.meter.helpers import journal_entries
from tests.sync.conftest import account
from tests.sync.webhook_receiver import Receiver, account_events, delete_all_endpoints, send_all

CT = "credits"
ALERT_EVENTS = ("balance.low", "balance.depleted", "hold.expired")


@pytest.fixture
def receiver(engine: Engine) -> Iterator[Receiver]:
    """A receiver subscribed to the alert events; the endpoint goes after the test (the
    SQL, and so every emit's fan-out, is shared by the session's tests)."""
    delete_all_endpoints(engine)
    r = Receiver(port=0).start()
    endpoint, r.secret = create_endpoint(engine, "test", r.url, ALERT_EVENTS)
    yield r
    delete_endpoint(engine, "test", endpoint.id)
    r.stop()


def _low(engine: Engine, meter: Meter, account_id: str, threshold: int | None) -> None:
    thresholds.set_threshold(engine, meter, "test", account_id, CT, "low", threshold)


def test_one_balance_low_per_crossing_delivered_signed(
    meter: Meter, flusher: Flusher, engine: Engine, tool: Tool, receiver: Receiver
) -> None:
    a = account()
    meter.grant(a, CT, 30)  # tool cost 3
    _low(engine, meter, a, 20)
    charges = [meter.charge(a, tool.name) for _ in range(6)]  # 27 24 21 18 15 12
    flusher.flush_all()
    crossing = charges[3]
    assert account_events(engine, a) == [
        (
            "balance.low",
            {
                "credit_type": CT,
                "available": 18,
                "threshold": 20,
                "entry_id": crossing.id,
                "entry_kind": "charge",
            },
        )
    ]
    send_all(engine, a)
    (got,) = receiver.received
    assert got.verified
    body = got.json()
    assert body["type"] == "balance.low"
    assert body["data"] == {**account_events(engine, a)[0][1], "account_id": a}


def test_a_grant_back_above_rearms_and_depleted_follows(
    meter: Meter, flusher: Flusher, engine: Engine, tool: Tool, receiver: Receiver
) -> None:
    a = account()
    meter.grant(a, CT, 12)
    _low(engine, meter, a, 10)
    first = meter.charge(a, tool.name)  # 12 -> 9: low
    meter.grant(a, CT, 3)  # 12: above again
    second = meter.charge(a, tool.name)  # 12 -> 9: low again
    meter.charge(a, tool.name, 2)  # 9 -> 3: below already
    last = meter.charge(a, tool.name)  # 3 -> 0: depleted
    flusher.flush_all()
    found = [(t, p["entry_id"]) for t, p in account_events(engine, a)]
    assert found == [
        ("balance.low", first.id),
        ("balance.low", second.id),
        ("balance.depleted", last.id),
    ]


def test_a_replayed_flush_sends_nothing_twice(
    meter: Meter, client: redis.Redis, engine: Engine, keys: Keys, tool: Tool, receiver: Receiver
) -> None:
    """The flusher dies between its SQL commit and XACK: its heir writes the same entries
    again; the events were committed with the first write and are not emitted again."""
    a = account()
    meter.grant(a, CT, 6)
    _low(engine, meter, a, 5)
    meter.charge(a, tool.name)  # 6 -> 3: low
    meter.charge(a, tool.name)  # 3 -> 0: depleted

    class DiesBeforeAck(Flusher):
        def _ack(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            if args[3]:  # a batch's ack, not the final lock release
                raise KeyboardInterrupt("killed between SQL commit and XACK")
            return super()._ack(*args, **kwargs)

    with pytest.raises(KeyboardInterrupt):
        DiesBeforeAck(client, engine, keys, consumer="dead-one").flush_all()
    bucket = keys.bucket(a)
    client.delete(keys.flush_lock(bucket))  # as if its TTL ran out
    result = Flusher(client, engine, keys, consumer="heir").flush_bucket(bucket)
    assert result is not None and result.reclaimed == 3  # the grant and both charges
    assert [t for t, _ in account_events(engine, a)] == ["balance.low", "balance.depleted"]
    send_all(engine, a)
    assert sorted(r.json()["type"] for r in receiver.received) == [
        "balance.depleted",
        "balance.low",
    ]
    assert all(r.verified for r in receiver.received)


def test_entries_written_again_emit_nothing_and_report_no_topup_crossing(
    meter: Meter, client: redis.Redis, engine: Engine, keys: Keys, tool: Tool, receiver: Receiver
) -> None:
    a = account()
    meter.grant(a, CT, 30)
    thresholds.set_threshold(engine, meter, "test", a, CT, "topup", 25)
    c = meter.charge(a, tool.name, 2)  # 30 -> 24: crosses the top-up threshold
    bucket = keys.bucket(a)
    entries = [
        parse(sid.decode(), fields)
        for sid, fields in journal_entries(client, keys.journal(bucket))
        if fields[b"a"] == a.encode()
    ]
    first = write_transaction(engine, lambda conn: write_entries(conn, bucket, entries, now_ms()))
    assert first.topup_crossings == [(c.id, a, CT)]
    again = write_transaction(engine, lambda conn: write_entries(conn, bucket, entries, now_ms()))
    assert again.topup_crossings == []
    assert account_events(engine, a) == []  # top-up is not a webhook event


@pytest.mark.parametrize("found_by", ["sweep", "charge"])
def test_a_hold_that_expires_sends_hold_expired(
    meter: Meter,
    flusher: Flusher,
    engine: Engine,
    tool: Tool,
    receiver: Receiver,
    found_by: str,
) -> None:
    """The expiry sweep finds it, or a later charge on the wallet does (lazily)."""
    a = account()
    meter.grant(a, CT, 30)
    h = meter.hold(a, tool.name, amount=7, ttl_s=1)
    time.sleep(1.1)
    if found_by == "sweep":
        assert meter.expire_wallet(a, CT).holds_expired == 1
    else:
        assert meter.charge(a, tool.name).available == 27  # the hold's 7 are back
    flusher.flush_all()
    flusher.flush_all()
    ((kind, payload),) = account_events(engine, a)
    assert kind == "hold.expired"
    assert payload["hold_id"] == h.id and payload["amount"] == 7
    assert payload["credit_type"] == CT and payload["expired_at"].endswith("Z")
    send_all(engine, a)
    assert [r.json()["type"] for r in receiver.received] == ["hold.expired"]


def test_nothing_is_recorded_while_no_endpoint_listens(
    meter: Meter, flusher: Flusher, engine: Engine, tool: Tool
) -> None:
    delete_all_endpoints(engine)
    a = account()
    meter.grant(a, CT, 3)
    meter.charge(a, tool.name)  # depleted, unheard
    flusher.flush_all()
    assert account_events(engine, a) == []


def test_a_threshold_survives_redis_losing_the_wallet(
    meter: Meter,
    client: redis.Redis,
    flusher: Flusher,
    engine: Engine,
    keys: Keys,
    tool: Tool,
    receiver: Receiver,
) -> None:
    a = account()
    meter.grant(a, CT, 30)
    _low(engine, meter, a, 20)
    flusher.flush_all()
    client.delete(keys.wallet(a, CT), keys.account(a))  # lost with Redis's data
    c = meter.charge(a, tool.name, 4)  # hydrated from SQL with its threshold: 30 -> 18
    flusher.flush_all()
    assert [(t, p["entry_id"]) for t, p in account_events(engine, a)] == [("balance.low", c.id)]


def test_setting_a_threshold_is_audited_and_removable(
    meter: Meter, flusher: Flusher, engine: Engine, tool: Tool, receiver: Receiver
) -> None:
    a = account()
    meter.grant(a, CT, 30)
    _low(engine, meter, a, 20)
    assert thresholds.get_thresholds(engine, a, "low") == {CT: 20}
    _low(engine, meter, a, None)
    assert thresholds.get_thresholds(engine, a, "low") == {}
    meter.charge(a, tool.name, 5)  # 30 -> 15: no threshold any more
    flusher.flush_all()
    assert account_events(engine, a) == []
    with engine.connect() as conn:
        audited = conn.execute(
            select(T_AUDIT.c.action, T_AUDIT.c.detail).where(T_AUDIT.c.target == a)
        ).all()
    assert [r.action for r in audited] == ["account.threshold", "account.threshold"]


@pytest.mark.parametrize(
    ("credit_type", "kind", "threshold"),
    [("Credits", "low", 5), (CT, "high", 5), (CT, "low", 0), (CT, "low", 2**53)],
)
def test_a_bad_threshold_is_refused_and_nothing_is_saved(
    meter: Meter, engine: Engine, credit_type: str, kind: str, threshold: int
) -> None:
    a = account()
    meter.grant(a, CT, 3)
    with pytest.raises(InvalidArgument):
        thresholds.set_threshold(engine, meter, "test", a, credit_type, kind, threshold)
    assert thresholds.get_thresholds(engine, a, "low") == {}


def test_an_unknown_account_gets_no_threshold(meter: Meter, engine: Engine) -> None:
    with pytest.raises(thresholds.UnknownAccount):
        thresholds.set_threshold(engine, meter, "test", account(), CT, "low", 5)
