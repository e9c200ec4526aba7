"""Issue 13, the inbound half: events built from Stripe's own published example objects
(tests/stripe_events), in the shapes of API versions from 2025-03-31 on and of 2025-01-27,
signed as Stripe signs a webhook delivery, verified as the webhook verifies it, stored and
applied as the worker applies it; on real Redis and SQL."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
import redis
import stripe
from sqlalchemy import Engine, delete, insert, select

from meter import Meter
from meter.keys import Keys
from sync import limits
from sync.flush import Flusher
from sync.models import (
    T_ACCOUNTS,
    T_CHECKOUT_QUOTES,
    T_PLANS,
    T_PURCHASES,
    T_STRIPE_EVENTS,
    T_SUBSCRIPTIONS,
)
from sync.pricing import current_plan
from sync.purchases import EventError, Ignored, Purchases, load_event, mark_event, store_event
from sync.reports import Range, revenue
from sync.status import sync_status
from tests import stripe_events as se
from tests.sync.conftest import account

SECRET = "whsec_test_inbound"
DAY_S = 86400


@pytest.fixture
def purchases(engine: Engine, meter: Meter, flusher: Flusher) -> Purchases:
    return Purchases(engine, meter, flush_bucket=flusher.flush_bucket)


def deliver(purchases: Purchases, event: dict[str, Any]) -> str:
    """One delivery, end to end but for HTTP: signed by "Stripe", the signature checked as
    the webhook checks it, stored, then applied and marked as the worker does."""
    payload, header = se.signed(event, SECRET)
    stripe.WebhookSignature.verify_header(
        payload, header, SECRET, tolerance=limits.STRIPE_WEBHOOK_TOLERANCE_S
    )
    stored = json.loads(payload)
    store_event(purchases.engine, stored, payload)
    loaded = load_event(purchases.engine, stored["id"])
    assert loaded is not None
    outcome, _ = purchases.apply(loaded)
    mark_event(
        purchases.engine, stored["id"], "ignored" if isinstance(outcome, Ignored) else "applied"
    )
    return outcome


def balance(meter: Meter, acct: str, ct: str = "credits") -> int:
    w = meter.balance(acct, [ct]).wallet(ct)
    return 0 if w is None else int(w.balance)


def purchase_rows(engine: Engine, acct: str) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(T_PURCHASES)
                .where(T_PURCHASES.c.account_id == acct)
                .order_by(T_PURCHASES.c.created_at_ms, T_PURCHASES.c.credit_type)
            ).all()
        )


def flagged(engine: Engine, acct: str) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.execute(select(T_ACCOUNTS.c.flagged).where(T_ACCOUNTS.c.id == acct)).scalar()
        )


def revenue_rows(engine: Engine, group: str, value: str) -> list[dict[str, Any]]:
    """Today's revenue rows of one pack or plan (the SQL database is shared by the tests)."""
    now_ms = int(time.time() * 1000)
    rng = Range(now_ms - DAY_S * 1000, now_ms + DAY_S * 1000)
    rows = revenue(engine, rng, (group,)).as_dicts()
    return [r for r in rows if r[f"{group}_id"] == value]


# --- one-off purchases ---------------------------------------------------------------------


def buy(
    purchases: Purchases,
    version: str,
    acct: str,
    *,
    credits: int = 50,
    amount: int = 500,
    pack_id: str = "",
    **kw: Any,
) -> dict[str, Any]:
    """A paid checkout of a session creditmeter created (its quote stored); the session."""
    session = se.checkout_session(
        version,
        account_id=acct,
        amount_total=amount,
        metadata={
            "account_id": acct,
            "credit_type": "credits",
            "credits": str(credits),
            "pack_id": pack_id,
        },
        **kw,
    )
    se.store_quote(purchases.engine, session)
    assert deliver(purchases, se.event(version, "checkout.session.completed", session)).startswith(
        "granted"
    )
    return session


def refund(
    purchases: Purchases, version: str, session: dict[str, Any], amount: int, **kw: Any
) -> tuple[dict[str, Any], str]:
    r = se.refund(
        version, payment_intent=session["payment_intent"], charge=se.new_id("ch"), amount=amount
    )
    r.update(kw)
    return r, deliver(purchases, se.event(version, "refund.created", r))


def dispute(
    purchases: Purchases, version: str, session: dict[str, Any], amount: int, status: str, id: str
) -> str:
    d = se.dispute(
        version,
        payment_intent=session["payment_intent"],
        charge="ch_disputed",
        amount=amount,
        status=status,
        id=id,
    )
    kind = (
        "charge.dispute.closed"
        if status in ("won", "lost", "warning_closed")
        else ("charge.dispute.created")
    )
    return deliver(purchases, se.event(version, kind, d))


@pytest.mark.parametrize("version", se.VERSIONS)
def test_a_refund_plus_a_lost_dispute_add_up_capped_at_the_payment(
    purchases: Purchases, meter: Meter, engine: Engine, version: str
) -> None:
    """Item 8: 200 refunded + 300 lost in a dispute is all 500 back: all 50 credits (max()
    kept 20); a dispute of the whole 500 on top of the refund takes no more than the 50."""
    acct = account("both")
    session = buy(purchases, version, acct)
    refund(purchases, version, session, 200)
    assert balance(meter, acct) == 30
    dp = se.new_id("dp")
    assert dispute(purchases, version, session, 300, "needs_response", dp).endswith("took back 30")
    assert dispute(purchases, version, session, 300, "lost", dp).endswith("took back 0")
    assert balance(meter, acct) == 0
    dispute(purchases, version, session, 500, "needs_response", se.new_id("dp"))
    assert balance(meter, acct) == 0
    (p,) = purchase_rows(engine, acct)
    assert (p.clawed_back, p.refunded_minor, p.status) == (50, 500, "disputed")


@pytest.mark.parametrize("version", se.VERSIONS)
@pytest.mark.parametrize("how", ["refund.failed", "charge.refund.updated"])
def test_a_failed_refund_gives_its_credits_back_once(
    purchases: Purchases, meter: Meter, engine: Engine, version: str, how: str
) -> None:
    """Item 9: the refund took 20 credits; Stripe then reports it failed: the 20 come back,
    once, and a late `refund.created` of it takes nothing again."""
    acct = account("failed-refund")
    session = buy(purchases, version, acct)
    r, outcome = refund(purchases, version, session, 200)
    assert outcome.endswith("took back 20")
    charge = se.charge(version, payment_intent=session["payment_intent"], amount=500)
    charge["amount_refunded"] = 200  # the charge's total, seen before the refund failed
    deliver(purchases, se.event(version, "charge.refunded", charge))
    failed = dict(r, status="failed")
    assert deliver(purchases, se.event(version, how, failed)).endswith("gave back 20")
    assert deliver(purchases, se.event(version, how, failed)).endswith("took back 0")
    assert deliver(purchases, se.event(version, "refund.created", r)).endswith("took back 0")
    assert balance(meter, acct) == 50
    (p,) = purchase_rows(engine, acct)
    assert (p.status, p.refunded_minor, p.clawed_back - p.returned) == ("paid", 0, 0)


def test_an_inquiry_takes_nothing_and_its_closing_clears_the_flag(
    purchases: Purchases, meter: Meter, engine: Engine
) -> None:
    """Item 7: an inquiry (`warning_needs_response`) flags the account but moves no money, so
    no credits; closed (`warning_closed`) it clears the flag."""
    acct = account("inquiry")
    session = buy(purchases, se.CURRENT, acct)
    dp = se.new_id("dp")
    assert dispute(purchases, se.CURRENT, session, 500, "warning_needs_response", dp).endswith(
        "took back 0"
    )
    assert balance(meter, acct) == 50 and flagged(engine, acct)
    dispute(purchases, se.CURRENT, session, 500, "warning_closed", dp)
    assert balance(meter, acct) == 50 and not flagged(engine, acct)


@pytest.mark.parametrize("version", se.VERSIONS)
def test_a_won_dispute_gives_the_credits_back_and_clears_the_flag(
    purchases: Purchases, meter: Meter, engine: Engine, version: str
) -> None:
    """Item 7: the dispute took the 50 credits and flagged the account; won, the credits come
    back and the flag goes; the `created` event redelivered late changes nothing."""
    acct = account("won")
    session = buy(purchases, version, acct)
    dp = se.new_id("dp")
    assert dispute(purchases, version, session, 500, "needs_response", dp).endswith("took back 50")
    assert balance(meter, acct) == 0 and flagged(engine, acct)
    assert dispute(purchases, version, session, 500, "won", dp).endswith("gave back 50")
    assert dispute(purchases, version, session, 500, "needs_response", dp).endswith("took back 0")
    assert balance(meter, acct) == 50 and not flagged(engine, acct)
    (p,) = purchase_rows(engine, acct)
    assert (p.status, p.refunded_minor) == ("paid", 0)


def test_a_partially_refunded_purchase_stays_in_the_revenue_report(
    purchases: Purchases, engine: Engine
) -> None:
    """Item 6: 500 paid, 100 refunded: the report shows 500 gross, 100 refunded, 400 net."""
    pack = f"pack-{uuid.uuid4().hex[:8]}"
    session = buy(purchases, se.CURRENT, account("partial"), pack_id=pack)
    refund(purchases, se.CURRENT, session, 100)
    (row,) = revenue_rows(engine, "pack", pack)
    assert (row["purchases"], row["gross_minor"], row["refunded_minor"], row["net_minor"]) == (
        1,
        500,
        100,
        400,
    )


def test_adaptive_pricing_records_both_currencies_and_reports_the_catalogs(
    purchases: Purchases, meter: Meter, engine: Engine
) -> None:
    """Item 14: the customer paid 463 EUR for a 500 USD price: the purchase is 500 usd with
    463 eur presented, revenue is in usd; a refund (in eur, as Stripe refunds the charge)
    of everything takes all the credits and refunds the 500 usd."""
    acct = account("adaptive")
    pack = f"pack-{uuid.uuid4().hex[:8]}"
    session = buy(
        purchases,
        se.CURRENT,
        acct,
        amount=463,
        currency="eur",
        conversion=(500, "usd"),
        pack_id=pack,
    )
    (p,) = purchase_rows(engine, acct)
    assert (p.amount_minor, p.currency, p.presentment_amount_minor, p.presentment_currency) == (
        500,
        "usd",
        463,
        "eur",
    )
    refund(purchases, se.CURRENT, session, 463)
    assert balance(meter, acct) == 0
    (row,) = revenue_rows(engine, "pack", pack)
    assert (row["currency"], row["gross_minor"], row["net_minor"]) == ("usd", 500, 0)


def test_the_grant_follows_the_stored_quote_and_a_mismatch_grants_nothing(
    purchases: Purchases, meter: Meter, engine: Engine
) -> None:
    """Item 15: a signed event whose metadata says a million credits grants the 50 the quote
    says; one whose amount_total is 1 where the quote charged 500 fails and grants nothing;
    so does a session with no stored quote."""
    acct = account("quote")
    meta = {"account_id": acct, "credit_type": "credits", "credits": "1000000", "pack_id": ""}
    session = se.checkout_session(se.CURRENT, account_id=acct, amount_total=500, metadata=meta)
    se.store_quote(engine, session, credits=50)
    outcome = deliver(purchases, se.event(se.CURRENT, "checkout.session.completed", session))
    assert outcome == "granted 50 credits"

    cheap = se.checkout_session(se.CURRENT, account_id=acct, amount_total=500, metadata=meta)
    se.store_quote(engine, cheap, credits=50)
    cheap["amount_total"] = 1
    with pytest.raises(EventError, match="nothing granted"):
        deliver(purchases, se.event(se.CURRENT, "checkout.session.completed", cheap))
    unquoted = se.checkout_session(se.CURRENT, account_id=acct, amount_total=1, metadata=meta)
    with pytest.raises(EventError, match="no quote"):
        deliver(purchases, se.event(se.CURRENT, "checkout.session.completed", unquoted))
    assert balance(meter, acct) == 50


def test_a_purchase_granted_before_quotes_were_kept_is_redelivered_as_already_granted(
    purchases: Purchases, engine: Engine
) -> None:
    acct = account("legacy")
    session = buy(purchases, se.CURRENT, acct)
    with engine.begin() as conn:  # as if granted by a version that kept no quote
        conn.execute(
            delete(T_CHECKOUT_QUOTES).where(T_CHECKOUT_QUOTES.c.session_id == session["id"])
        )
    again = se.event(se.CURRENT, "checkout.session.completed", session)
    assert deliver(purchases, again) == "already granted 50 credits"


# --- plans -----------------------------------------------------------------------------------


def new_plan(
    engine: Engine, allocations: dict[str, int], discount: int = 20, rollover_cap: int = 0
) -> dict[str, Any]:
    row = {
        "id": f"plan-{uuid.uuid4().hex[:8]}",
        "display_name": "Plan",
        "stripe_price_id": se.new_id("price"),
        "allocations": json.dumps(allocations),
        "expire_at_period_end": True,
        "rollover_cap": rollover_cap,
        "discount_percent": discount,
        "active": True,
    }
    with engine.begin() as conn:
        conn.execute(insert(T_PLANS), [row])
    return row


@pytest.fixture
def pro(engine: Engine) -> dict[str, Any]:
    return new_plan(engine, {"credits": 1000, "video_seconds": 120})


@pytest.fixture
def basic(engine: Engine) -> dict[str, Any]:
    return new_plan(engine, {"credits": 200}, discount=0)


def subscribe(
    purchases: Purchases, version: str, acct: str, plan: dict[str, Any]
) -> tuple[str, str]:
    """A plan checkout (as sync.stripe_api creates it) completed: (subscription, customer)."""
    session = se.checkout_session(
        version,
        account_id=acct,
        amount_total=2000,
        metadata={"account_id": acct, "plan_id": plan["id"]},
        mode="subscription",
    )
    assert deliver(purchases, se.event(version, "checkout.session.completed", session)).startswith(
        "subscription linked"
    )
    return session["subscription"], session["customer"]


def pay(
    purchases: Purchases,
    version: str,
    sub: str,
    customer: str,
    lines: list[tuple[str, int, tuple[int, int], bool]],
    *,
    billing_reason: str = "subscription_cycle",
    payment_first: bool = False,
) -> tuple[str, str]:
    """An invoice paid by a new payment intent, delivered as `version` delivers it (from
    2025-03-31 the payment intent comes in an `invoice_payment.paid` event, before or after
    `invoice.paid`): (outcome of invoice.paid, payment intent)."""
    pi = se.new_id("pi")
    inv = se.invoice(
        version,
        customer=customer,
        subscription=sub,
        lines=lines,
        billing_reason=billing_reason,
        payment_intent=pi if version == se.ACACIA else None,
    )
    paid = se.event(version, "invoice.paid", inv)
    if version == se.ACACIA:
        return deliver(purchases, paid), pi
    payment = se.invoice_payment(invoice_id=inv["id"], payment_intent=pi, amount=inv["amount_paid"])
    payment_event = se.event(version, "invoice_payment.paid", payment)
    if payment_first:
        deliver(purchases, payment_event)
        return deliver(purchases, paid), pi
    outcome = deliver(purchases, paid)
    deliver(purchases, payment_event)
    return outcome, pi


def period(days: int = 30) -> tuple[int, int]:
    now_s = int(time.time())
    return now_s - 60, now_s + days * DAY_S


@pytest.mark.parametrize(
    ("version", "payment_first"),
    [(se.CURRENT, False), (se.CURRENT, True), (se.ACACIA, False)],
)
def test_a_refund_of_a_plan_invoice_takes_its_credits_back_and_revenue_shows_it(
    purchases: Purchases,
    meter: Meter,
    engine: Engine,
    pro: dict[str, Any],
    version: str,
    payment_first: bool,
) -> None:
    """Item 3: on current versions the invoice names no payment intent; the invoice_payment
    does, before or after invoice.paid. A full refund of the invoice takes both credit types
    back, and revenue shows the invoice refunded."""
    acct = account("plan-refund")
    sub, cus = subscribe(purchases, version, acct, pro)
    outcome, pi = pay(
        purchases,
        version,
        sub,
        cus,
        [(pro["stripe_price_id"], 2000, period(), False)],
        payment_first=payment_first,
    )
    assert "granted 1000 credits" in outcome and "granted 120 video_seconds" in outcome
    charge = se.charge(version, payment_intent=pi, amount=2000, amount_refunded=2000)
    assert deliver(purchases, se.event(version, "charge.refunded", charge)).endswith(
        "took back 1120"
    )
    assert balance(meter, acct) == 0 and balance(meter, acct, "video_seconds") == 0
    (row,) = revenue_rows(engine, "plan", pro["id"])
    assert (row["gross_minor"], row["refunded_minor"], row["net_minor"]) == (2000, 2000, 0)


@pytest.mark.parametrize("version", se.VERSIONS)
def test_a_first_invoice_delivered_before_its_checkout_finds_its_account_in_the_metadata(
    purchases: Purchases, meter: Meter, pro: dict[str, Any], version: str
) -> None:
    """The subscription's metadata (set by creditmeter's plan checkout) comes on its invoices:
    under `parent.subscription_details` from 2025-03-31, `subscription_details` before."""
    acct = account("first-invoice")
    inv = se.invoice(
        version,
        customer=se.new_id("cus"),
        subscription=se.new_id("sub"),
        lines=[(pro["stripe_price_id"], 2000, period(), False)],
        billing_reason="subscription_create",
        subscription_metadata={"account_id": acct, "plan_id": pro["id"]},
    )
    assert "granted 1000 credits" in deliver(purchases, se.event(version, "invoice.paid", inv))
    assert balance(meter, acct) == 1000


def test_a_lost_dispute_of_a_plan_invoice_takes_its_credits_back_on_current_versions(
    purchases: Purchases, meter: Meter, engine: Engine, pro: dict[str, Any]
) -> None:
    acct = account("plan-dispute")
    sub, cus = subscribe(purchases, se.CURRENT, acct, pro)
    _, pi = pay(purchases, se.CURRENT, sub, cus, [(pro["stripe_price_id"], 2000, period(), False)])
    d = se.dispute(se.CURRENT, payment_intent=pi, charge="ch_plan", amount=2000, status="lost")
    deliver(purchases, se.event(se.CURRENT, "charge.dispute.closed", d))
    assert balance(meter, acct) == 0 and balance(meter, acct, "video_seconds") == 0
    assert flagged(engine, acct)


def test_a_5_percent_refund_of_a_plan_invoice_takes_5_percent_of_each_credit_type(
    purchases: Purchases, meter: Meter, pro: dict[str, Any]
) -> None:
    """Item 4 (an endpoint pinned to 2025-01-27): 100 of 2000 back takes ceil(5%) of each
    type: 50 of 1000 credits and 6 of 120 video seconds (not all 120)."""
    acct = account("share")
    sub, cus = subscribe(purchases, se.ACACIA, acct, pro)
    _, pi = pay(purchases, se.ACACIA, sub, cus, [(pro["stripe_price_id"], 2000, period(), False)])
    charge = se.charge(se.ACACIA, payment_intent=pi, amount=2000, amount_refunded=100)
    assert deliver(purchases, se.event(se.ACACIA, "charge.refunded", charge)).endswith(
        "took back 56"
    )
    assert (balance(meter, acct), balance(meter, acct, "video_seconds")) == (950, 114)


@pytest.mark.parametrize("version", se.VERSIONS)
def test_plan_changes_do_what_a_stripe_user_expects(
    purchases: Purchases,
    meter: Meter,
    engine: Engine,
    basic: dict[str, Any],
    pro: dict[str, Any],
    version: str,
) -> None:
    """Item 5, the README's table: an upgrade billed at once (a proration invoice: unused
    basic credited, remaining pro charged) tops the period up to pro's allocation; a
    downgrade's proration invoice grants nothing more; the next cycle invoice grants the
    plan of the new period whole; cancelling at period end changes nothing until then."""
    acct = account("change")
    sub, cus = subscribe(purchases, version, acct, basic)
    start, end = period()
    outcome, _ = pay(
        purchases, version, sub, cus, [(basic["stripe_price_id"], 500, (start, end), False)]
    )
    assert outcome.endswith("granted 200 credits")

    now_s = int(time.time())
    upgrade = [
        (basic["stripe_price_id"], -400, (now_s, end), True),
        (pro["stripe_price_id"], 1600, (now_s, end), True),
    ]
    outcome, _ = pay(purchases, version, sub, cus, upgrade, billing_reason="subscription_update")
    assert "granted 800 credits" in outcome and "granted 120 video_seconds" in outcome
    assert (balance(meter, acct), balance(meter, acct, "video_seconds")) == (1000, 120)

    downgrade = [
        (pro["stripe_price_id"], -1500, (now_s + 1, end), True),
        (basic["stripe_price_id"], 380, (now_s + 1, end), True),
    ]
    outcome, _ = pay(purchases, version, sub, cus, downgrade, billing_reason="subscription_update")
    assert isinstance(outcome, Ignored) and "grants nothing more" in outcome
    assert (balance(meter, acct), balance(meter, acct, "video_seconds")) == (1000, 120)

    # The next period, on basic: basic's allocation whole, expiring at that period's end.
    cycle = [(basic["stripe_price_id"], 500, (end, end + 30 * DAY_S), False)]
    outcome, _ = pay(purchases, version, sub, cus, cycle)
    assert outcome.endswith("granted 200 credits")

    canceling = se.subscription(
        version,
        customer=cus,
        price_id=basic["stripe_price_id"],
        status="active",
        period=(end, end + 30 * DAY_S),
        id=sub,
        cancel_at_period_end=True,
    )
    deliver(purchases, se.event(version, "customer.subscription.updated", canceling))
    assert current_plan(engine, acct) == basic["id"]
    assert balance(meter, acct) == 1200


def test_after_an_upgrade_the_rollover_counts_both_grants_of_the_period(
    purchases: Purchases, meter: Meter, engine: Engine, tool: Any
) -> None:
    """Item 5: the period had its own 200 and an upgrade's 800 more; 150 spent, the 850 left
    of both grants roll over into the next period (under the cap of 2000), not one grant's."""
    small = new_plan(engine, {"credits": 200}, rollover_cap=2000)
    big = new_plan(engine, {"credits": 1000}, rollover_cap=2000)
    acct = account("roll-upgrade")
    sub, cus = subscribe(purchases, se.CURRENT, acct, small)
    now_s = int(time.time())
    end = now_s + 2
    pay(
        purchases, se.CURRENT, sub, cus, [(small["stripe_price_id"], 500, (now_s - 10, end), False)]
    )
    upgrade = [
        (small["stripe_price_id"], -100, (now_s, end), True),
        (big["stripe_price_id"], 900, (now_s, end), True),
    ]
    outcome, _ = pay(purchases, se.CURRENT, sub, cus, upgrade, billing_reason="subscription_update")
    assert outcome.endswith("granted 800 credits")
    meter.charge(acct, tool.name, quantity=50)  # 150 credits
    time.sleep(max(0.0, end - time.time()) + 0.1)
    cycle = [(big["stripe_price_id"], 2000, (end, end + 30 * DAY_S), False)]
    outcome, _ = pay(purchases, se.CURRENT, sub, cus, cycle)
    assert outcome.endswith("granted 1000 credits")
    assert balance(meter, acct) == 1000 + 850
    rolled = [p.credits for p in purchase_rows(engine, acct) if p.source == "rollover"]
    assert rolled == [850]


@pytest.mark.parametrize("version", se.VERSIONS)
def test_two_subscription_events_of_one_second_apply_in_the_order_of_the_subscriptions_state(
    purchases: Purchases, engine: Engine, pro: dict[str, Any], version: str
) -> None:
    """Item 10: `created` (incomplete) and `updated` (active) in the same second, delivered
    the other way round: the subscription stays active and its 20% discount applies."""
    acct = account("same-second")
    now_s = int(time.time())
    sub_id = se.new_id("sub")

    def state(status: str) -> dict[str, Any]:
        return se.subscription(
            version,
            customer=se.new_id("cus"),
            price_id=pro["stripe_price_id"],
            status=status,
            period=(now_s, now_s + 30 * DAY_S),
            id=sub_id,
            account_id=acct,
        )

    active = se.event(version, "customer.subscription.updated", state("active"), created=now_s)
    created = se.event(version, "customer.subscription.created", state("incomplete"), created=now_s)
    assert deliver(purchases, active) == f"account {acct}: plan {pro['id']} active"
    assert deliver(purchases, created).startswith("ignored: a newer event")
    with engine.connect() as conn:
        status = conn.execute(
            select(T_SUBSCRIPTIONS.c.status).where(T_SUBSCRIPTIONS.c.id == sub_id)
        ).scalar_one()
    assert status == "active" and current_plan(engine, acct) == pro["id"]


def test_events_of_another_product_are_ignored_and_counted_apart(
    purchases: Purchases, engine: Engine, client: redis.Redis, keys: Keys
) -> None:
    """Item 13: Stripe's example session as it is (no creditmeter metadata), a subscription
    and a paid invoice of a price that is no plan, for a customer creditmeter does not know,
    a refund and a dispute of another charge: each `ignored`, none failed, and sync health
    counts them apart."""
    session = se.example(se.CURRENT, "checkout.session")
    session.update(payment_status="paid", status="complete", amount_total=1000, currency="usd")
    other_sub = se.subscription(
        se.CURRENT,
        customer="cus_other",
        price_id="price_other",
        status="active",
        period=period(),
    )
    other_invoice = se.invoice(
        se.CURRENT,
        customer="cus_other",
        subscription=other_sub["id"],
        lines=[("price_other", 1000, period(), False)],
    )
    events = [
        se.event(se.CURRENT, "checkout.session.completed", session),
        se.event(se.CURRENT, "customer.subscription.created", other_sub),
        se.event(se.CURRENT, "invoice.paid", other_invoice),
        # Stripe's examples as they are: a refund and an inquiry of a charge made without a
        # payment intent (no Checkout Session, no invoice of creditmeter's).
        se.event(se.CURRENT, "refund.created", se.example(se.CURRENT, "refund")),
        se.event(se.CURRENT, "charge.dispute.created", se.example(se.CURRENT, "dispute")),
    ]
    before = sync_status(client, engine, keys)  # the SQL database is shared by the tests
    for e in events:
        assert isinstance(deliver(purchases, e), Ignored)
    after = sync_status(client, engine, keys)
    assert after.stripe_events_ignored == (before.stripe_events_ignored or 0) + 5
    assert after.stripe_events_unapplied == before.stripe_events_unapplied
    with engine.connect() as conn:
        statuses = conn.execute(
            select(T_STRIPE_EVENTS.c.status).where(
                T_STRIPE_EVENTS.c.id.in_([e["id"] for e in events])
            )
        ).scalars()
        assert list(statuses) == ["ignored"] * 5
