"""purchase.completed and refund.applied on real Redis and SQL: Stripe events built like
Stripe's (tests/stripe_fake.py) applied by sync.purchases, each announced once however often
it is delivered, to a loopback receiver that verifies the signature. A dispute's clawback
is not a refund and announces none."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from meter import Meter
from sync.flush import Flusher
from sync.purchases import Purchases, purchase_id
from sync.webhooks import create_endpoint, delete_endpoint
from tests import stripe_fake as sf
from tests.sync.conftest import account
from tests.sync.test_purchases import completed
from tests.sync.webhook_receiver import Receiver, account_events, delete_all_endpoints, send_all


@pytest.fixture
def purchases(engine: Engine, meter: Meter, flusher: Flusher) -> Purchases:
    return Purchases(engine, meter, flush_bucket=flusher.flush_bucket)


@pytest.fixture
def receiver(engine: Engine) -> Iterator[Receiver]:
    delete_all_endpoints(engine)
    r = Receiver(port=0).start()
    events = ("purchase.completed", "refund.applied")
    endpoint, r.secret = create_endpoint(engine, "test", r.url, events)
    yield r
    delete_endpoint(engine, "test", endpoint.id)
    r.stop()


def test_a_purchase_is_announced_once_however_often_it_is_delivered(
    purchases: Purchases, engine: Engine, receiver: Receiver
) -> None:
    acct = account("buyer")
    buy = completed(engine, acct, credits=50, amount=500)
    session = buy["data"]["object"]
    for _ in range(3):
        purchases.apply(buy)
    purchases.apply(sf.event("checkout.session.async_payment_succeeded", session))
    assert account_events(engine, acct) == [
        (
            "purchase.completed",
            {
                "purchase_id": purchase_id("session", session["id"]),
                "credit_type": "credits",
                "credits": 50,
                "amount_minor": 500,
                "currency": session["currency"],
                "source": "pack",
                "stripe_session_id": session["id"],
                "stripe_invoice_id": None,
            },
        )
    ]
    send_all(engine, acct)
    (got,) = receiver.received
    assert got.verified and got.json()["type"] == "purchase.completed"
    assert got.json()["data"]["account_id"] == acct


def test_each_refund_that_takes_credits_back_is_announced_once(
    purchases: Purchases, engine: Engine, receiver: Receiver
) -> None:
    acct = account("refunded")
    buy = completed(engine, acct, credits=50, amount=500)
    session = buy["data"]["object"]
    purchases.apply(buy)
    pi = session["payment_intent"]
    first, second = (
        sf.event("refund.created", sf.refund(payment_intent=pi, charge="ch_x", amount=a))
        for a in (100, 150)
    )
    purchases.apply(first)
    ch = sf.charge(payment_intent=pi, amount=500, amount_refunded=100)
    purchases.apply(sf.event("charge.refunded", ch))  # the same refund's total: nothing new
    purchases.apply(second)
    for e in (first, second, sf.event("charge.refunded", ch)):  # redeliveries
        purchases.apply(e)
    refunds = [p for t, p in account_events(engine, acct) if t == "refund.applied"]
    assert [(p["credits_taken_back"], p["credits_taken_back_total"]) for p in refunds] == [
        (10, 10),
        (15, 25),
    ]
    assert refunds[-1]["refunded_minor"] == 250
    assert refunds[-1]["stripe_payment_intent_id"] == pi
    send_all(engine, acct)
    assert sorted(r.json()["type"] for r in receiver.received) == [
        "purchase.completed",
        "refund.applied",
        "refund.applied",
    ]
    assert all(r.verified for r in receiver.received)


def test_a_dispute_takes_credits_back_without_a_refund_event(
    purchases: Purchases, engine: Engine, receiver: Receiver
) -> None:
    acct = account("disputed")
    buy = completed(engine, acct, credits=50, amount=500)
    session = buy["data"]["object"]
    purchases.apply(buy)
    dispute = sf.dispute(charge="ch_d", payment_intent=session["payment_intent"], amount=500)
    assert purchases.apply(sf.event("charge.dispute.created", dispute))[0].endswith("took back 50")
    assert [t for t, _ in account_events(engine, acct)] == ["purchase.completed"]
