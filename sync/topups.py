"""Auto top-up (issue 16 item 4): when a wallet's available credits cross below its rule's
threshold, buy the rule's credits with the card the account saved at checkout.

The charge script flags the journal entry that crosses a wallet's top-up threshold; the
flush that writes the entry claims one attempt for that crossing, within the daily cap, in
the same SQL transaction (topup_attempts.claim_crossings), and the flush job enqueues it
(a job lost between the two is enqueued again by `rescue_pending`). The job (`run_attempt`)
prices the credits as a quote would, creates an off-session payment intent confirmed at
once, its idempotency key the attempt's id, and:
- succeeded: grants through the purchase path (Purchases.topup_paid), which the
  `payment_intent.succeeded` webhook also reaches: one purchase row, one grant;
- a card error (card_declined, authentication_required) or a payment left needing the
  customer: the attempt fails with Stripe's code (or the payment's status), `topup.failed`
  is emitted, and the third failure in a row disables the rule;
- Stripe unreachable: the job raises and RQ retries it; the card has not failed.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
import stripe
from sqlalchemy import Engine

from meter.keys import Keys
from meter.times import now_ms as clock_ms
from sync import pricing, stripe_api, topup_attempts, topup_store
from sync.purchases import Purchases
from sync.queues import enqueue_topup
from sync.settings import Settings

log = logging.getLogger(__name__)


def rescue_pending(
    engine: Engine, now_ms: int, *, queue_redis: redis.Redis, keys: Keys
) -> list[str]:
    """Enqueues again the jobs of attempts left pending (topup_attempts.stale_pending); an
    attempt whose job is waiting, running or scheduled for a retry is left to it. Returns
    the attempts enqueued."""
    return [
        aid
        for aid in topup_attempts.stale_pending(engine, now_ms)
        if enqueue_topup(queue_redis, keys, aid)
    ]


def run_attempt(engine: Engine, client: stripe.StripeClient, purchases: Purchases, aid: str) -> str:
    """Pays one attempt (what the job runs; safe to run again) -> what happened."""
    attempt = topup_attempts.get_attempt(engine, aid)
    if attempt is None:
        return f"no top-up attempt {aid}"
    if attempt.status in ("succeeded", "failed"):
        return f"already {attempt.status}"
    if attempt.amount_minor is None:
        problem = _price(engine, attempt)
        if isinstance(problem, str):
            return problem
        attempt = problem
    card = topup_store.saved_card(engine, attempt.account_id)
    if card is None:
        return _failed(engine, aid, "no_payment_method", "no card saved: buy credits once", None)
    try:
        intent = stripe_api.charge_saved_card(client, attempt, card)
    except stripe_api.PaymentFailed as exc:
        return _failed(engine, aid, exc.code or "payment_failed", str(exc), exc.payment_intent_id)
    except stripe_api.StripeRefused as exc:
        return _failed(engine, aid, exc.code or "stripe_refused", str(exc), None)
    except (stripe_api.StripeUnavailable, stripe_api.StripeNotConfigured) as exc:
        topup_attempts.note_error(engine, aid, f"retrying: {exc}", clock_ms())
        raise
    status = str(intent.status)
    if status == "succeeded":
        return purchases.topup_paid(stripe_api.as_sent(intent))
    if status == "processing":  # not a card: its payment_intent.* webhook settles it
        topup_attempts.mark_processing(engine, aid, intent.id, clock_ms())
        return f"processing: payment_intent.succeeded will grant ({intent.id})"
    # Cards answer a 402 when the customer must act; any other state is a failure too.
    message = f"payment intent {intent.id} is {status}: the customer must act"
    return _failed(engine, aid, status, message, intent.id)


def _price(engine: Engine, attempt: topup_attempts.Attempt) -> topup_attempts.Attempt | str:
    """Fixes the attempt's price, as a quote for the rule's credits would be (with the
    account's plan discount) -> the attempt; or the failure recorded when it cannot be."""
    rule = topup_store.get_rule(engine, attempt.account_id, attempt.credit_type)
    if rule is None or not rule.enabled:
        return _failed(engine, attempt.id, "rule_disabled", "the rule was disabled", None)
    try:
        quote = pricing.chargeable(
            pricing.quote(engine, rule.credit_type, rule.credits, account_id=rule.account_id)
        )
    except pricing.PricingError as exc:
        return _failed(engine, attempt.id, "not_priced", str(exc), None)
    return topup_attempts.fix_price(engine, attempt.id, quote.credits, quote.amount, quote.currency)


def _failed(engine: Engine, aid: str, code: str, message: str, pi: str | None) -> str:
    topup_attempts.record_failure(
        engine, aid, code=code, message=message, payment_intent_id=pi, now_ms=clock_ms()
    )
    log.warning("top-up %s failed: %s: %s", aid, code, message)
    return f"failed: {code}"


def save_checkout_card(engine: Engine, settings: Settings, session: dict[str, Any]) -> str | None:
    """Keeps the card of a paid checkout the account opted in for (`save_card`, with
    setup_future_usage=off_session): Stripe attached it to the customer; the payment
    intent names it. None when there is nothing to keep."""
    meta = session.get("metadata") or {}
    pi = session.get("payment_intent")
    account = meta.get("account_id")
    if meta.get("save_card") != "1" or session.get("payment_status") != "paid":
        return None
    if not isinstance(pi, str) or not isinstance(account, str):
        return None
    try:
        intent = stripe_api.payment_intent(stripe_api.client_for(settings), pi)
    except stripe_api.StripeRefused as exc:
        # No retry can mend it (the intent is gone at Stripe); the purchase stands.
        log.error("card of %s not saved: %s", account, exc)
        return None
    method, customer = _id_of(intent.payment_method), _id_of(intent.customer)
    if method is None or customer is None:
        return None
    topup_store.save_card(engine, account, topup_store.SavedCard(customer, method), clock_ms())
    return method


def _id_of(value: object) -> str | None:
    """An id, or an expanded object's id."""
    if isinstance(value, str):
        return value
    found = getattr(value, "id", None)
    return found if isinstance(found, str) else None
