"""Auto top-up (sync/topups.py, sync/topup_store.py) on real Redis and SQL against the
loopback fake Stripe: one payment and one grant per crossing whoever sees it (the job, its
re-run, the webhook), the daily cap, card errors recorded and alerted, the rule disabled
after three in a row, Stripe outages retried without counting, the card saved at checkout."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
import stripe
from rq.job import Job
from sqlalchemy import Engine, select

from meter import Meter
from meter.keys import Keys
from meter.times import now_ms
from sync import stripe_api, topup_attempts, topup_store
from sync.context import SyncContext
from sync.flush import Flusher
from sync.models import T_AUDIT, T_PURCHASES, T_WEBHOOK_EVENTS
from sync.pricing import PriceTable, Slab, replace_prices
from sync.purchases import Purchases, purchase_id, store_event
from sync.queues import enqueue_topup
from sync.settings import Settings
from sync.topups import rescue_pending, run_attempt, save_checkout_card
from tests import stripe_events
from tests import stripe_fake as sf
from tests.sync.conftest import account
from worker.stripe_jobs import apply_stored_event

UNIT_MINOR = 10  # the test price: 10 cents a credit, so 100 credits cost 1000


@pytest.fixture(scope="module")
def fake() -> Iterator[sf.FakeStripe]:
    with sf.FakeStripe() as f:
        yield f


@pytest.fixture
def settings(fake: sf.FakeStripe) -> Settings:
    return Settings(stripe_secret_key="sk_test_fake", stripe_api_base=fake.url)


@pytest.fixture
def sc(settings: Settings) -> stripe.StripeClient:
    return stripe_api.client_for(settings)


@pytest.fixture
def purchases(engine: Engine, meter: Meter, flusher: Flusher) -> Purchases:
    return Purchases(engine, meter, flush_bucket=flusher.flush_bucket)


@dataclass
class Wallet:
    account_id: str
    credit_type: str


def _wallet(
    engine: Engine,
    sc: stripe.StripeClient,
    card: str | None = sf.CARD_SUCCEEDS,
    daily_max: int = 3,
) -> Wallet:
    """An account with a rule (below 50 buy 100) on a credit type of its own, sold at
    UNIT_MINOR, and `card` saved on its Stripe customer."""
    acct, ct = account("topup"), f"tu_{uuid.uuid4().hex[:10]}"
    replace_prices(engine, [PriceTable(ct, "usd", "graduated", 1, (Slab(1, None, UNIT_MINOR),))])
    topup_store.set_rule(
        engine, "test", acct, ct, threshold=50, credits=100, daily_max=daily_max, now_ms=now_ms()
    )
    if card is not None:
        customer = sc.v1.customers.create(params={"metadata": {"account_id": acct}})
        topup_store.save_card(engine, acct, topup_store.SavedCard(customer.id, card), now_ms())
    return Wallet(acct, ct)


def _request(engine: Engine, w: Wallet, client_redis: redis.Redis, keys: Keys, **kw: Any) -> Any:
    """What the flush and its job do for a crossing: claim its attempt, enqueue the claimed."""
    crossing = kw.pop("crossing", f"x-{uuid.uuid4().hex[:8]}")
    at_ms = kw.pop("at_ms", now_ms())
    aid, _ = topup_attempts.claim(engine, w.account_id, w.credit_type, crossing, at_ms)
    if aid is not None:
        enqueue_topup(client_redis, keys, aid)
    return aid


def _available(meter: Meter, w: Wallet) -> int:
    found = meter.balance(w.account_id, [w.credit_type]).wallet(w.credit_type)
    return 0 if found is None else int(found.balance)


def _topup_events(engine: Engine, acct: str) -> list[dict[str, Any]]:
    e = T_WEBHOOK_EVENTS.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(e.payload).where(e.account_id == acct, e.type == "topup.failed")
        ).all()
    return [json.loads(r.payload) for r in rows]


# --- paying once -----------------------------------------------------------------------------


def test_a_crossing_pays_once_and_grants_once_through_job_rerun_and_webhook(
    engine: Engine,
    sc: stripe.StripeClient,
    fake: sf.FakeStripe,
    purchases: Purchases,
    meter: Meter,
    keys: Keys,
    redis_sync: redis.Redis,
) -> None:
    w = _wallet(engine, sc)
    aid = _request(engine, w, redis_sync, keys)
    assert aid is not None
    assert Job.exists(f"topup-{keys.prefix}-{aid}", connection=redis_sync)
    before = len(fake.calls("POST", "/v1/payment_intents"))
    assert run_attempt(engine, sc, purchases, aid).startswith(f"granted 100 {w.credit_type}")
    assert run_attempt(engine, sc, purchases, aid) == "already succeeded"
    attempt = topup_attempts.get_attempt(engine, aid)
    assert attempt is not None and attempt.payment_intent_id is not None
    assert (attempt.status, attempt.credits, attempt.amount_minor) == ("succeeded", 100, 1000)
    # Stripe's webhook about the same payment meets the same purchase row and grant.
    intent = sc.v1.payment_intents.retrieve(attempt.payment_intent_id)
    event = sf.event("payment_intent.succeeded", stripe_api.as_sent(intent))
    assert purchases.apply(event)[0].startswith("already granted 100")
    assert _available(meter, w) == 100
    sent = fake.calls("POST", "/v1/payment_intents")[before:]
    assert len(sent) == 1
    params = sent[0].params
    assert (params["off_session"], params["confirm"], params["amount"]) == ("true", "true", "1000")
    assert params["payment_method"] == sf.CARD_SUCCEEDS and params["customer"].startswith("cus_")
    assert sent[0].headers["idempotency-key"] == f"creditmeter-{aid}"
    with engine.connect() as conn:
        p = conn.execute(
            select(T_PURCHASES).where(T_PURCHASES.c.id == purchase_id("topup", aid))
        ).one()
    assert (p.source, p.status, p.credits, p.stripe_payment_intent_id) == (
        "topup",
        "paid",
        100,
        attempt.payment_intent_id,
    )


def test_the_webhook_first_then_the_job_grants_once(
    engine: Engine,
    sc: stripe.StripeClient,
    fake: sf.FakeStripe,
    purchases: Purchases,
    meter: Meter,
    keys: Keys,
    redis_sync: redis.Redis,
) -> None:
    """A job that died after Stripe answered: the webhook grants, and the re-run's request
    (same idempotency key) is replayed by Stripe, not paid again."""
    w = _wallet(engine, sc)
    aid = _request(engine, w, redis_sync, keys)
    attempt = topup_attempts.fix_price(engine, aid, 100, 1000, "usd")
    card = topup_store.saved_card(engine, w.account_id)
    assert card is not None
    intent = stripe_api.charge_saved_card(sc, attempt, card)  # the job dies here
    event = sf.event("payment_intent.succeeded", stripe_api.as_sent(intent))
    assert purchases.apply(event)[0].startswith("granted 100")
    assert run_attempt(engine, sc, purchases, aid) == "already succeeded"
    assert _available(meter, w) == 100
    replies = [
        r
        for r in fake.calls("POST", "/v1/payment_intents")
        if r.params["metadata"].get("topup_attempt_id") == aid
    ]
    assert len(replies) == 1


def test_a_rerun_after_stripe_answered_is_replayed_by_stripe_and_grants_once(
    engine: Engine,
    sc: stripe.StripeClient,
    fake: sf.FakeStripe,
    purchases: Purchases,
    meter: Meter,
    keys: Keys,
    redis_sync: redis.Redis,
) -> None:
    w = _wallet(engine, sc)
    aid = _request(engine, w, redis_sync, keys)
    attempt = topup_attempts.fix_price(engine, aid, 100, 1000, "usd")
    card = topup_store.saved_card(engine, w.account_id)
    assert card is not None
    first = stripe_api.charge_saved_card(sc, attempt, card)  # the job dies here
    assert run_attempt(engine, sc, purchases, aid).startswith("granted 100")
    assert topup_attempts.get_attempt(engine, aid).payment_intent_id == first.id  # type: ignore[union-attr]
    assert _available(meter, w) == 100


def test_at_most_one_attempt_per_crossing_even_when_claimed_at_once(
    engine: Engine, sc: stripe.StripeClient, keys: Keys, redis_sync: redis.Redis
) -> None:
    w = _wallet(engine, sc)
    results: list[tuple[str | None, str]] = []
    barrier = threading.Barrier(8)

    def claim() -> None:
        barrier.wait()
        results.append(topup_attempts.claim(engine, w.account_id, w.credit_type, "x-1", now_ms()))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert {aid for aid, _ in results} == {
        topup_attempts.attempt_id(w.account_id, w.credit_type, "x-1")
    }
    assert sorted(why for _, why in results).count("claimed") == 1
    assert len(topup_attempts.last_attempts(engine, w.account_id, w.credit_type)) == 1


def test_claims_of_many_crossings_at_once_stay_within_the_daily_cap(
    engine: Engine, sc: stripe.StripeClient
) -> None:
    w = _wallet(engine, sc, daily_max=2)
    claimed: list[str | None] = []
    barrier = threading.Barrier(8)

    def claim(i: int) -> None:
        barrier.wait()
        aid, _ = topup_attempts.claim(engine, w.account_id, w.credit_type, f"x-{i}", now_ms())
        claimed.append(aid)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(claimed) == 8 and len([a for a in claimed if a]) == 2
    assert len(topup_attempts.last_attempts(engine, w.account_id, w.credit_type)) == 2


def test_a_settled_crossing_is_not_topped_up_again(
    engine: Engine,
    sc: stripe.StripeClient,
    purchases: Purchases,
    keys: Keys,
    redis_sync: redis.Redis,
) -> None:
    w = _wallet(engine, sc)
    aid = _request(engine, w, redis_sync, keys, crossing="x-once")
    run_attempt(engine, sc, purchases, aid)
    assert _request(engine, w, redis_sync, keys, crossing="x-once") is None
    assert _request(engine, w, redis_sync, keys, crossing="x-next") is not None


def test_the_daily_cap_counts_the_last_24_hours(
    engine: Engine, sc: stripe.StripeClient, keys: Keys, redis_sync: redis.Redis
) -> None:
    w = _wallet(engine, sc, daily_max=2)
    t0 = now_ms()
    assert _request(engine, w, redis_sync, keys, at_ms=t0) is not None
    assert _request(engine, w, redis_sync, keys, at_ms=t0 + 1) is not None
    assert _request(engine, w, redis_sync, keys, at_ms=t0 + 2) is None
    assert topup_attempts.claim(engine, w.account_id, w.credit_type, "x-late", t0 + 3)[1] == (
        "daily_max: 2 top-ups in the last 24 h"
    )
    assert _request(engine, w, redis_sync, keys, at_ms=t0 + topup_attempts.DAY_MS) is not None


def test_no_enabled_rule_no_attempt(
    engine: Engine, sc: stripe.StripeClient, keys: Keys, redis_sync: redis.Redis
) -> None:
    w = _wallet(engine, sc)
    topup_store.disable_rule(engine, "test", w.account_id, w.credit_type, "off", now_ms())
    assert _request(engine, w, redis_sync, keys) is None
    other = Wallet(w.account_id, "tu_never_set")
    assert _request(engine, other, redis_sync, keys) is None
    assert topup_attempts.last_attempts(engine, w.account_id, w.credit_type) == []


# --- failures --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("card", "code"),
    [(sf.CARD_DECLINED, "card_declined"), (sf.CARD_NEEDS_AUTH, "authentication_required")],
)
def test_a_card_error_is_recorded_and_alerted_and_grants_nothing(
    engine: Engine,
    sc: stripe.StripeClient,
    purchases: Purchases,
    meter: Meter,
    keys: Keys,
    redis_sync: redis.Redis,
    card: str,
    code: str,
) -> None:
    w = _wallet(engine, sc, card=card)
    aid = _request(engine, w, redis_sync, keys)
    assert run_attempt(engine, sc, purchases, aid) == f"failed: {code}"
    assert run_attempt(engine, sc, purchases, aid) == "already failed"  # counted once
    attempt = topup_attempts.get_attempt(engine, aid)
    assert attempt is not None
    assert (attempt.status, attempt.error_code) == ("failed", code)
    assert attempt.payment_intent_id is not None and attempt.payment_intent_id.startswith("pi_")
    rule = topup_store.get_rule(engine, w.account_id, w.credit_type)
    assert rule is not None and (rule.enabled, rule.consecutive_failures) == (True, 1)
    [alert] = _topup_events(engine, w.account_id)
    assert (alert["attempt_id"], alert["error_code"], alert["rule_disabled"]) == (aid, code, False)
    assert _available(meter, w) == 0


def test_three_failures_in_a_row_disable_the_rule_and_a_success_resets_the_count(
    engine: Engine,
    sc: stripe.StripeClient,
    purchases: Purchases,
    keys: Keys,
    redis_sync: redis.Redis,
) -> None:
    w = _wallet(engine, sc, card=sf.CARD_DECLINED, daily_max=10)
    for _ in range(2):
        run_attempt(engine, sc, purchases, _request(engine, w, redis_sync, keys))
    customer = topup_store.saved_card(engine, w.account_id)
    assert customer is not None
    good = topup_store.SavedCard(customer.customer_id, sf.CARD_SUCCEEDS)
    topup_store.save_card(engine, w.account_id, good, now_ms())
    run_attempt(engine, sc, purchases, _request(engine, w, redis_sync, keys))
    rule = topup_store.get_rule(engine, w.account_id, w.credit_type)
    assert rule is not None and rule.consecutive_failures == 0
    bad = topup_store.SavedCard(customer.customer_id, sf.CARD_DECLINED)
    topup_store.save_card(engine, w.account_id, bad, now_ms())
    for _ in range(3):
        run_attempt(engine, sc, purchases, _request(engine, w, redis_sync, keys))
    rule = topup_store.get_rule(engine, w.account_id, w.credit_type)
    assert rule is not None
    assert (rule.enabled, rule.consecutive_failures) == (False, 3)
    assert rule.disabled_reason == "3 failed top-ups in a row (last: card_declined)"
    assert [e["rule_disabled"] for e in _topup_events(engine, w.account_id)].count(True) == 1
    assert _request(engine, w, redis_sync, keys) is None
    with engine.connect() as conn:
        actions = conn.execute(
            select(T_AUDIT.c.actor, T_AUDIT.c.action).where(
                T_AUDIT.c.target == f"{w.account_id}/{w.credit_type}"
            )
        ).all()
    assert ("system", "topup.disable") in [tuple(a) for a in actions]


def test_an_unreachable_stripe_is_retried_and_not_a_failure(
    engine: Engine,
    sc: stripe.StripeClient,
    fake: sf.FakeStripe,
    purchases: Purchases,
    meter: Meter,
    keys: Keys,
    redis_sync: redis.Redis,
) -> None:
    w = _wallet(engine, sc)
    aid = _request(engine, w, redis_sync, keys)
    fake.fail_with(503)
    try:
        with pytest.raises(stripe_api.StripeUnavailable):
            run_attempt(engine, sc, purchases, aid)
    finally:
        fake.fail_with(None)
    attempt = topup_attempts.get_attempt(engine, aid)
    assert attempt is not None and attempt.status == "pending"
    assert attempt.error is not None and attempt.error.startswith("retrying: ")
    rule = topup_store.get_rule(engine, w.account_id, w.credit_type)
    assert rule is not None and rule.consecutive_failures == 0
    assert _topup_events(engine, w.account_id) == []
    assert run_attempt(engine, sc, purchases, aid).startswith("granted 100")
    assert _available(meter, w) == 100


def test_no_saved_card_is_a_failure(
    engine: Engine,
    sc: stripe.StripeClient,
    purchases: Purchases,
    keys: Keys,
    redis_sync: redis.Redis,
) -> None:
    w = _wallet(engine, sc, card=None)
    aid = _request(engine, w, redis_sync, keys)
    assert run_attempt(engine, sc, purchases, aid) == "failed: no_payment_method"
    assert _topup_events(engine, w.account_id)[0]["error_code"] == "no_payment_method"


# --- saving the card at checkout -------------------------------------------------------------


def _checkout(engine: Engine, sc: stripe.StripeClient, acct: str, ct: str) -> None:
    from sync.pricing import quote

    stripe_api.checkout_credits(
        engine,
        sc,
        account_id=acct,
        quote=quote(engine, ct, 100),
        pack_id=None,
        success_url="https://a.example/ok",
        cancel_url="https://a.example/cancel",
        request_key=uuid.uuid4().hex,
    )


def test_checkouts_save_the_card_only_when_the_account_opted_in(
    engine: Engine, sc: stripe.StripeClient, fake: sf.FakeStripe
) -> None:
    w = _wallet(engine, sc, card=None)
    _checkout(engine, sc, w.account_id, w.credit_type)
    opted = fake.calls("POST", "/v1/checkout/sessions")[-1].params
    assert opted["payment_intent_data"]["setup_future_usage"] == "off_session"
    assert opted["metadata"]["save_card"] == "1"
    topup_store.disable_rule(engine, "test", w.account_id, w.credit_type, "off", now_ms())
    _checkout(engine, sc, w.account_id, w.credit_type)
    plain = fake.calls("POST", "/v1/checkout/sessions")[-1].params
    assert "setup_future_usage" not in plain["payment_intent_data"]
    assert "save_card" not in plain["metadata"]


def test_a_paid_opted_in_checkout_event_saves_the_card_of_its_payment_intent(
    engine: Engine,
    sc: stripe.StripeClient,
    fake: sf.FakeStripe,
    settings: Settings,
    meter: Meter,
    keys: Keys,
    redis_sync: redis.Redis,
) -> None:
    """Through the stripe job (worker/stripe_jobs.py): the grant, then the card."""
    w = _wallet(engine, sc, card=None)
    customer = sc.v1.customers.create(params={}).id
    pi = fake.add_payment_intent(
        customer=customer,
        amount=500,
        payment_method=sf.CARD_DECLINED,
        setup_future_usage="off_session",
    )
    session = sf.checkout_session(
        account_id=w.account_id,
        amount_total=500,
        customer=customer,
        payment_intent=pi,
        metadata={
            "account_id": w.account_id,
            "credit_type": "credits",
            "credits": "50",
            "save_card": "1",
        },
    )
    stripe_events.store_quote(engine, session)
    event = sf.event("checkout.session.completed", session)
    store_event(engine, event, json.dumps(event))
    ctx = SyncContext(settings, meter.redis, redis_sync, engine, keys)
    assert apply_stored_event(ctx, event["id"]) == "granted 50 credits"
    assert topup_store.saved_card(engine, w.account_id) == topup_store.SavedCard(
        customer, sf.CARD_DECLINED
    )
    # A payment intent Stripe no longer knows: nothing kept, and no retry that cannot help.
    lost = dict(session, payment_intent="pi_gone", metadata={**session["metadata"]})
    lost["metadata"]["account_id"] = "lost-card"
    assert save_checkout_card(engine, settings, lost) is None
    assert topup_store.saved_card(engine, "lost-card") is None
    # A session without the flag (not opted in when it was made) keeps nothing.
    other = dict(session, metadata={"account_id": "someone-else"})
    assert save_checkout_card(engine, settings, other) is None
    assert topup_store.saved_card(engine, "someone-else") is None


def test_the_payment_failed_webhook_and_the_job_count_a_decline_once(
    engine: Engine,
    sc: stripe.StripeClient,
    purchases: Purchases,
    keys: Keys,
    redis_sync: redis.Redis,
) -> None:
    w = _wallet(engine, sc, card=sf.CARD_DECLINED, daily_max=5)
    # The job first, then Stripe's payment_intent.payment_failed about the same payment.
    first = _request(engine, w, redis_sync, keys)
    assert run_attempt(engine, sc, purchases, first) == "failed: card_declined"
    kept = topup_attempts.get_attempt(engine, first)
    assert kept is not None and kept.payment_intent_id is not None
    intent = stripe_api.as_sent(sc.v1.payment_intents.retrieve(kept.payment_intent_id))
    late = purchases.apply(sf.event("payment_intent.payment_failed", intent))[0]
    assert late.startswith("ignored: no pending top-up")
    # The webhook first (the job died after Stripe answered), then the job's re-run.
    second = _request(engine, w, redis_sync, keys)
    attempt = topup_attempts.fix_price(engine, second, 100, 1000, "usd")
    card = topup_store.saved_card(engine, w.account_id)
    assert card is not None
    with pytest.raises(stripe_api.PaymentFailed) as declined:
        stripe_api.charge_saved_card(sc, attempt, card)
    assert declined.value.payment_intent_id is not None
    intent = stripe_api.as_sent(sc.v1.payment_intents.retrieve(declined.value.payment_intent_id))
    early = purchases.apply(sf.event("payment_intent.payment_failed", intent))[0]
    assert early == f"top-up {second} failed: card_declined"
    assert run_attempt(engine, sc, purchases, second) == "already failed"
    rule = topup_store.get_rule(engine, w.account_id, w.credit_type)
    assert rule is not None and rule.consecutive_failures == 2
    assert len(_topup_events(engine, w.account_id)) == 2


def test_attempts_left_pending_are_enqueued_again_within_the_hour(
    engine: Engine, sc: stripe.StripeClient, keys: Keys, redis_sync: redis.Redis
) -> None:
    """A claim whose enqueue was lost (claimed here without one) is rescued by the sweep
    after a minute; its job waiting, the next sweep adds nothing; an hour on it is history."""
    w = _wallet(engine, sc)
    t0 = now_ms()
    aid, _ = topup_attempts.claim(engine, w.account_id, w.credit_type, "x-lost", t0)
    assert aid is not None
    job_id = f"topup-{keys.prefix}-{aid}"

    def rescue(at_ms: int) -> list[str]:
        found = rescue_pending(engine, at_ms, queue_redis=redis_sync, keys=keys)
        return [a for a in found if a == aid]

    assert rescue(t0 + topup_attempts.RESCUE_AFTER_MS - 1) == []
    assert not Job.exists(job_id, connection=redis_sync)
    assert rescue(t0 + topup_attempts.RESCUE_AFTER_MS) == [aid]
    assert Job.exists(job_id, connection=redis_sync)
    assert rescue(t0 + topup_attempts.RESCUE_AFTER_MS + 1) == []  # its job is waiting
    Job.fetch(job_id, connection=redis_sync).delete()
    assert rescue(t0 + topup_attempts.RESCUE_WITHIN_MS) == []


def test_the_cron_sweeps_pending_top_ups_on_the_stripe_queue(
    redis_sync: redis.Redis, keys: Keys
) -> None:
    from sync.queues import STRIPE, queue_name
    from worker import topup_jobs
    from worker.trigger import make_cron

    mine = {j.func: j.queue_name for j in make_cron(redis_sync, keys).get_jobs()}
    assert mine[topup_jobs.sweep_pending] == queue_name(keys, STRIPE)


def test_a_refunded_top_up_takes_its_credits_back(
    engine: Engine,
    sc: stripe.StripeClient,
    purchases: Purchases,
    meter: Meter,
    keys: Keys,
    redis_sync: redis.Redis,
) -> None:
    w = _wallet(engine, sc)
    aid = _request(engine, w, redis_sync, keys)
    run_attempt(engine, sc, purchases, aid)
    attempt = topup_attempts.get_attempt(engine, aid)
    assert attempt is not None and attempt.payment_intent_id is not None
    refunded = sf.charge(
        payment_intent=attempt.payment_intent_id, amount=1000, amount_refunded=1000
    )
    outcome = purchases.apply(sf.event("charge.refunded", refunded))[0]
    assert "took back 100" in outcome
    assert _available(meter, w) == 0


def test_a_change_that_crosses_the_rule_threshold_is_reported_and_topped_up(
    engine: Engine,
    sc: stripe.StripeClient,
    purchases: Purchases,
    meter: Meter,
    keys: Keys,
    redis_sync: redis.Redis,
) -> None:
    """The contract with the balance alerts' change: setting a rule sets the wallet's
    topup threshold, the script flags the entry that crosses it, the flush's WriteResult
    lists it and claims its attempt in the same transaction: the attempt the job pays."""
    from sync import thresholds
    from sync.journal import parse
    from sync.writer import write_entries

    w = _wallet(engine, sc)
    meter.grant(w.account_id, w.credit_type, 120, category="paid")
    thresholds.set_threshold(engine, meter, "test", w.account_id, w.credit_type, "topup", 50)
    meter.adjust(w.account_id, w.credit_type, -80, reason="usage")  # 120 -> 40: crosses 50
    bucket = keys.bucket(w.account_id)
    raw = meter.redis.xrange(keys.journal(bucket))
    entries = [parse(sid.decode(), fields) for sid, fields in raw]
    with engine.begin() as conn:
        written = write_entries(conn, bucket, entries, now_ms())
    [(entry_id, acct, ct)] = [c for c in written.topup_crossings if c[1] == w.account_id]
    [aid] = written.topup_attempts
    assert aid == topup_attempts.attempt_id(acct, ct, entry_id)
    with engine.begin() as conn:  # a replayed batch: nothing new, no second attempt
        assert write_entries(conn, bucket, entries, now_ms()).topup_attempts == []
    assert run_attempt(engine, sc, purchases, aid).startswith("granted 100")
    assert _available(meter, w) == 140
