"""Stripe events applied to credits (sync/purchases.py) on real Redis and SQL: each event at
most once whatever the order and the number of deliveries, refunds and disputes as running
totals, plan allocations with expiry and rollover. Events are built like Stripe's
(tests/stripe_fake.py); the HTTP webhook and the worker are in tests/api/test_stripe.py."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select, update

from meter import Meter
from sync.flush import Flusher
from sync.models import T_ACCOUNTS, T_LEDGER, T_PLANS, T_PURCHASES, T_SUBSCRIPTIONS
from sync.purchases import (
    EventError,
    Ignored,
    NotReady,
    Purchases,
    RolloverDue,
    purchase_id,
    store_event,
)
from tests import stripe_events
from tests import stripe_fake as sf
from tests.sync.conftest import account


@pytest.fixture
def purchases(engine: Engine, meter: Meter, flusher: Flusher) -> Purchases:
    return Purchases(engine, meter, flush_bucket=flusher.flush_bucket)


def balance(meter: Meter, acct: str, ct: str = "credits") -> int:
    w = meter.balance(acct, [ct]).wallet(ct)
    assert w is not None
    return int(w.balance)


def completed(
    engine: Engine, acct: str, credits: int = 50, amount: int = 500, **kw: Any
) -> dict[str, Any]:
    """A completed checkout of a session creditmeter created (its quote stored)."""
    session = sf.checkout_session(
        account_id=acct,
        amount_total=amount,
        metadata={"credit_type": "credits", "credits": str(credits), "pack_id": "credits-small"},
        **kw,
    )
    stripe_events.store_quote(engine, session)
    return sf.event("checkout.session.completed", session)


def purchase(engine: Engine, session_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            select(T_PURCHASES).where(T_PURCHASES.c.id == purchase_id("session", session_id))
        ).one()


def clawbacks(flusher: Flusher, engine: Engine, acct: str) -> list[int]:
    flusher.flush_all()
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(T_LEDGER.c.amount)
                .where(T_LEDGER.c.account_id == acct, T_LEDGER.c.kind == "clawback")
                .order_by(T_LEDGER.c.created_at_ms)
            ).scalars()
        )


# --- purchases ---------------------------------------------------------------------------


def test_a_paid_checkout_grants_once_however_often_it_is_delivered(
    purchases: Purchases, meter: Meter, engine: Engine
) -> None:
    acct = account("buyer")
    event = completed(purchases.engine, acct)
    outcomes = [purchases.apply(event)[0] for _ in range(3)]
    assert outcomes[0] == "granted 50 credits"
    assert outcomes[1:] == ["already granted 50 credits"] * 2
    session = event["data"]["object"]
    # The async success of the same session meets the same purchase row.
    again = sf.event("checkout.session.async_payment_succeeded", session)
    assert purchases.apply(again)[0] == "already granted 50 credits"
    assert balance(meter, acct) == 50
    p = purchase(engine, session["id"])
    assert (p.status, p.credits, p.amount_minor, p.source, p.pack_id) == (
        "paid",
        50,
        500,
        "pack",
        "credits-small",
    )
    grant = next(g for g in meter.balance(acct, ["credits"]).wallet("credits").grants)
    assert (grant.id, grant.category) == (p.grant_id, "paid")


def test_a_purchase_retried_after_its_idempotency_record_expired_grants_nothing_more(
    purchases: Purchases, meter: Meter, engine: Engine
) -> None:
    """The wallet already holds the purchase's grant (named by the purchase id): the script
    answers GRANT_EXISTS and the purchase is marked paid, with no second grant."""
    acct = account("late")
    event = completed(purchases.engine, acct)
    assert purchases.apply(event)[0] == "granted 50 credits"
    pid = purchase(engine, event["data"]["object"]["id"]).id
    meter.redis.delete(meter.keys.idempotency(acct, f"stripe-purchase:{pid}"))  # a day later
    with engine.begin() as conn:
        conn.execute(update(T_PURCHASES).where(T_PURCHASES.c.id == pid).values(status="pending"))
    assert purchases.apply(event)[0] == "granted 50 credits"  # the grant was made
    assert balance(meter, acct) == 50
    assert purchase(engine, event["data"]["object"]["id"]).status == "paid"


def test_50_concurrent_applications_of_one_event_grant_once(
    purchases: Purchases, meter: Meter
) -> None:
    acct = account("burst")
    event = completed(purchases.engine, acct, credits=100, amount=900)
    barrier = threading.Barrier(50)
    outcomes: list[str] = []

    def deliver() -> None:
        barrier.wait()
        outcomes.append(purchases.apply(event)[0])

    threads = [threading.Thread(target=deliver) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(outcomes) == 50
    assert balance(meter, acct) == 100
    grants = meter.balance(acct, ["credits"]).wallet("credits").grants
    assert [g.remaining for g in grants] == [100]


def test_unpaid_then_async_failure_gives_no_credits_and_async_success_gives_them_once(
    purchases: Purchases, meter: Meter
) -> None:
    acct = account("async")
    unpaid = completed(purchases.engine, acct, payment_status="unpaid")
    session = unpaid["data"]["object"]
    outcome = purchases.apply(unpaid)[0]
    assert isinstance(outcome, Ignored) and outcome.startswith("ignored: not paid yet")
    failed = sf.event("checkout.session.async_payment_failed", session)
    assert isinstance(purchases.apply(failed)[0], Ignored)
    assert balance(meter, acct) == 0

    other = completed(purchases.engine, acct, payment_status="unpaid")
    paid_later = sf.event("checkout.session.async_payment_succeeded", other["data"]["object"])
    granted = purchases.apply(paid_later)[0]
    assert granted == "granted 50 credits" and not isinstance(granted, Ignored)
    assert isinstance(purchases.apply(other)[0], Ignored)  # completed, delivered late
    assert balance(meter, acct) == 50


def test_async_success_delivered_before_the_completion_grants_once(
    purchases: Purchases, meter: Meter
) -> None:
    acct = account("early")
    done = completed(purchases.engine, acct)
    early = sf.event("checkout.session.async_payment_succeeded", done["data"]["object"])
    assert purchases.apply(early)[0] == "granted 50 credits"
    assert purchases.apply(done)[0] == "already granted 50 credits"
    assert balance(meter, acct) == 50


def test_an_event_missing_what_it_needs_is_an_error_and_grants_nothing(
    purchases: Purchases, meter: Meter
) -> None:
    acct = account("bad")
    event = completed(purchases.engine, acct)
    del event["data"]["object"]["amount_total"]
    with pytest.raises(EventError, match=r"amount_total"):
        purchases.apply(event)
    assert balance(meter, acct) == 0


# --- refunds and disputes ------------------------------------------------------------------


def _refund_events(session: dict[str, Any], *amounts: int) -> list[dict[str, Any]]:
    pi = session["payment_intent"]
    refunds = [sf.refund(payment_intent=pi, charge="ch_x", amount=a) for a in amounts]
    return [sf.event("refund.created", r) for r in refunds]


def test_partial_refunds_twice_take_back_only_the_difference_each_time(
    purchases: Purchases, meter: Meter, engine: Engine, flusher: Flusher
) -> None:
    acct = account("partial")
    buy = completed(purchases.engine, acct, credits=50, amount=500)
    session = buy["data"]["object"]
    purchases.apply(buy)
    first, second = _refund_events(session, 100, 150)
    assert purchases.apply(first)[0].endswith("took back 10")
    # The charge's running total reports the same refund again: nothing more.
    ch = sf.charge(payment_intent=session["payment_intent"], amount=500, amount_refunded=100)
    assert purchases.apply(sf.event("charge.refunded", ch))[0].endswith("took back 0")
    assert purchases.apply(second)[0].endswith("took back 15")
    for e in (first, second, sf.event("charge.refunded", ch)):  # redeliveries, stale totals
        purchases.apply(e)
    assert balance(meter, acct) == 25
    assert clawbacks(flusher, engine, acct) == [-10, -15]
    p = purchase(engine, session["id"])
    assert (p.status, p.refunded_minor, p.clawed_back) == ("partially_refunded", 250, 25)


def test_a_refund_delivered_before_its_purchase_is_applied_when_the_purchase_arrives(
    purchases: Purchases, meter: Meter, engine: Engine
) -> None:
    acct = account("refund-first")
    buy = completed(purchases.engine, acct, credits=50, amount=500)
    session = buy["data"]["object"]
    ch = sf.charge(payment_intent=session["payment_intent"], amount=500, amount_refunded=500)
    assert "not known yet" in purchases.apply(sf.event("charge.refunded", ch))[0]
    assert purchases.apply(buy)[0] == "granted 50 credits; took back 50"
    assert balance(meter, acct) == 0
    assert purchase(engine, session["id"]).status == "refunded"


def test_refund_rounding_takes_back_the_credit_whose_money_went_back(
    purchases: Purchases, meter: Meter
) -> None:
    acct = account("round")
    buy = completed(purchases.engine, acct, credits=50, amount=500)
    purchases.apply(buy)
    (one_cent,) = _refund_events(buy["data"]["object"], 1)
    assert purchases.apply(one_cent)[0].endswith("took back 1")  # ceil(50 * 1 / 500)
    assert balance(meter, acct) == 49


def test_a_dispute_after_the_credits_were_spent_leaves_debt_and_flags_the_account(
    purchases: Purchases, meter: Meter, engine: Engine, tool: Any
) -> None:
    acct = account("dispute")
    buy = completed(purchases.engine, acct, credits=50, amount=500)
    session = buy["data"]["object"]
    purchases.apply(buy)
    meter.charge(acct, tool.name, quantity=15)  # 45 of the 50 credits spent
    dispute = sf.dispute(charge="ch_d", payment_intent=session["payment_intent"], amount=500)
    event = sf.event("charge.dispute.created", dispute)
    assert purchases.apply(event)[0].endswith("took back 50")
    assert purchases.apply(event)[0].endswith("took back 0")
    w = meter.balance(acct, ["credits"]).wallet("credits")
    assert (w.balance, w.debt) == (-45, 45)
    with engine.connect() as conn:
        flagged = conn.execute(select(T_ACCOUNTS.c.flagged).where(T_ACCOUNTS.c.id == acct))
        assert flagged.scalar_one() is True
    assert purchase(engine, session["id"]).status == "disputed"


# --- plans -----------------------------------------------------------------------------------


@pytest.fixture
def plan(engine: Engine) -> dict[str, Any]:
    row = {
        "id": f"plan-{uuid.uuid4().hex[:8]}",
        "display_name": "Pro",
        "stripe_price_id": f"price_{uuid.uuid4().hex[:12]}",
        "allocations": json.dumps({"credits": 1000}),
        "expire_at_period_end": True,
        "rollover_cap": 500,
        "discount_percent": 20,
        "active": True,
    }
    with engine.begin() as conn:
        conn.execute(insert(T_PLANS), [row])
    return row


def _invoice(sub: str, customer: str, plan: dict[str, Any], start_s: int, end_s: int) -> Any:
    inv = sf.invoice(
        customer=customer,
        subscription=sub,
        price_id=plan["stripe_price_id"],
        period_start=start_s,
        period_end=end_s,
        amount_paid=2000,
    )
    inv["parent"]["subscription_details"]["metadata"] = {}  # found by its subscription
    return inv


def _subscribe(purchases: Purchases, acct: str, plan: dict[str, Any], **kw: Any) -> dict:
    """A subscription checkout: links the customer and the subscription to the account."""
    session = sf.checkout_session(
        account_id=acct,
        mode="subscription",
        amount_total=2000,
        metadata={"account_id": acct, "plan_id": plan["id"]},
        **kw,
    )
    assert purchases.apply(sf.event("checkout.session.completed", session))[0].startswith(
        "subscription linked"
    )
    return session


def test_invoice_paid_twice_allocates_the_period_once_expiring_at_its_end(
    purchases: Purchases, meter: Meter, engine: Engine, plan: dict[str, Any]
) -> None:
    acct = account("sub")
    session = _subscribe(purchases, acct, plan)
    now_s = int(time.time())
    inv = _invoice(session["subscription"], session["customer"], plan, now_s, now_s + 30 * 86400)
    event = sf.event("invoice.paid", inv)
    assert "granted 1000 credits" in purchases.apply(event)[0]
    assert "already granted 1000 credits" in purchases.apply(event)[0]
    (g,) = meter.balance(acct, ["credits"]).wallet("credits").grants
    assert (g.remaining, g.expires_at_ms) == (1000, (now_s + 30 * 86400) * 1000)
    with engine.connect() as conn:
        sub = conn.execute(
            select(T_SUBSCRIPTIONS).where(T_SUBSCRIPTIONS.c.id == session["subscription"])
        ).one()
    assert (sub.account_id, sub.plan_id) == (acct, plan["id"])


def test_subscription_events_set_the_plan_and_an_older_one_arriving_late_changes_nothing(
    purchases: Purchases, engine: Engine, plan: dict[str, Any]
) -> None:
    acct = account("plan")
    now_s = int(time.time())
    sub = sf.subscription(
        customer="cus_x",
        price_id=plan["stripe_price_id"],
        current_period_start=now_s,
        current_period_end=now_s + 86400,
        metadata={"account_id": acct},
    )
    newer = sf.event("customer.subscription.deleted", sub, created=now_s + 10)
    older = sf.event("customer.subscription.updated", sub, created=now_s)
    assert purchases.apply(newer)[0] == f"account {acct}: plan {plan['id']} canceled"
    assert purchases.apply(older)[0].startswith("ignored: a newer event")
    with engine.connect() as conn:
        status = conn.execute(
            select(T_SUBSCRIPTIONS.c.status).where(T_SUBSCRIPTIONS.c.id == sub["id"])
        ).scalar_one()
    assert status == "canceled"


def test_an_invoice_of_an_unknown_customer_waits_for_the_event_that_names_its_account(
    purchases: Purchases, plan: dict[str, Any]
) -> None:
    now_s = int(time.time())
    inv = _invoice("sub_unknown", "cus_unknown", plan, now_s, now_s + 86400)
    with pytest.raises(NotReady):
        purchases.apply(sf.event("invoice.paid", inv))


def test_unused_plan_credits_roll_over_up_to_the_cap_once_the_period_has_ended(
    purchases: Purchases, meter: Meter, plan: dict[str, Any], tool: Any
) -> None:
    acct = account("roll")
    session = _subscribe(purchases, acct, plan)
    sub, cus = session["subscription"], session["customer"]
    now_s = int(time.time())
    first_end = now_s + 2
    first_invoice = _invoice(sub, cus, plan, now_s - 10, first_end)
    first = purchases.apply(sf.event("invoice.paid", first_invoice))
    assert "granted 1000 credits" in first[0], first
    meter.charge(acct, tool.name, quantity=100)  # 300 of 1000 spent: 700 unused
    # The next invoice, paid before the first period has ended: the rollover waits.
    inv2 = _invoice(sub, cus, plan, first_end, first_end + 30 * 86400)
    outcome, due = purchases.apply(sf.event("invoice.paid", inv2))
    assert "granted 1000 credits" in outcome
    assert due == RolloverDue(purchase_id("invoice", inv2["id"], "credits"), first_end * 1000)
    with pytest.raises(NotReady):
        purchases.rollover(due.purchase_id)
    time.sleep(max(0.0, first_end - time.time()) + 0.1)
    assert purchases.rollover(due.purchase_id) == "rolled over 500 credits"  # the cap
    assert purchases.rollover(due.purchase_id) == "already rolled over 500 credits"
    grants = meter.balance(acct, ["credits"]).wallet("credits").grants
    end_ms = (first_end + 30 * 86400) * 1000
    assert sorted((g.remaining, g.expires_at_ms) for g in grants) == [
        (500, end_ms),
        (1000, end_ms),
    ]


def test_a_late_invoice_rolls_over_what_expired_at_once(
    purchases: Purchases, meter: Meter, engine: Engine, plan: dict[str, Any], tool: Any
) -> None:
    acct = account("late")
    session = _subscribe(purchases, acct, plan)
    sub, cus = session["subscription"], session["customer"]
    now_s = int(time.time())
    first_end = now_s + 1
    purchases.apply(sf.event("invoice.paid", _invoice(sub, cus, plan, now_s - 10, first_end)))
    meter.charge(acct, tool.name, quantity=300)  # 900 spent: 100 unused, under the cap
    time.sleep(max(0.0, first_end - time.time()) + 0.1)
    inv2 = _invoice(sub, cus, plan, first_end, first_end + 86400)
    outcome, due = purchases.apply(sf.event("invoice.paid", inv2))
    assert due is None and "granted 1000 credits" in outcome
    assert balance(meter, acct) == 1100
    with engine.connect() as conn:
        rows = conn.execute(
            select(T_PURCHASES.c.source, T_PURCHASES.c.credits).where(
                T_PURCHASES.c.account_id == acct
            )
        ).all()
    assert sorted(rows) == [("plan", 1000), ("plan", 1000), ("rollover", 100)]


def test_store_event_keeps_the_first_delivery_only(engine: Engine) -> None:
    event = completed(engine, account("store"))
    payload = json.dumps(event)
    assert store_event(engine, event, payload) is True
    assert store_event(engine, event, payload) is False
    with pytest.raises(EventError):
        store_event(engine, {"id": "not-an-event", "type": "x"}, "{}")
