"""The purchase webhook producers, called by sync/purchases.py inside the transaction that
records the fact: purchase.completed when a purchase row becomes paid (its grant made),
refund.applied when a refund took credits back. Skipped while no endpoint listens.

Dedupe keys name Stripe objects: "<checkout session or invoice id>:<credit type>:
purchase.completed" (an invoice buys one purchase per credit type), and "<payment intent
id>:<purchase id>:<credits taken back in all>:refund.applied": Stripe's `charge.refunded`
on current API versions names no refund object, only the charge's running total, so the
running total of credits taken back for the purchase names the refund that moved it, and a
redelivered or stale event, which moves nothing, announces nothing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from sync.webhooks import emit, subscribed_types

PURCHASE_COMPLETED = "purchase.completed"
REFUND_APPLIED = "refund.applied"


def purchase_completed(conn: Connection, purchase: Any) -> None:
    """`purchase` is the T_PURCHASES row, just marked paid."""
    if PURCHASE_COMPLETED not in subscribed_types(conn):
        return
    stripe_object = purchase.stripe_session_id or purchase.stripe_invoice_id or purchase.id
    payload = {
        "purchase_id": purchase.id,
        "credit_type": purchase.credit_type,
        "credits": purchase.credits,
        "amount_minor": purchase.amount_minor,
        "currency": purchase.currency,
        "source": purchase.source,
        "stripe_session_id": purchase.stripe_session_id,
        "stripe_invoice_id": purchase.stripe_invoice_id,
    }
    key = f"{stripe_object}:{purchase.credit_type}:{PURCHASE_COMPLETED}"
    emit(conn, PURCHASE_COMPLETED, purchase.account_id, payload, key)


def refund_applied(
    conn: Connection, purchase: Any, taken_now: int, taken_total: int, refunded_minor: int
) -> None:
    """`purchase` is the T_PURCHASES row as read before; `taken_now` > 0 credits went back."""
    if taken_now <= 0 or REFUND_APPLIED not in subscribed_types(conn):
        return
    payload = {
        "purchase_id": purchase.id,
        "credit_type": purchase.credit_type,
        "credits_taken_back": taken_now,
        "credits_taken_back_total": taken_total,
        "refunded_minor": refunded_minor,
        "currency": purchase.currency,
        "stripe_payment_intent_id": purchase.stripe_payment_intent_id,
    }
    key = f"{purchase.stripe_payment_intent_id}:{purchase.id}:{taken_total}:{REFUND_APPLIED}"
    emit(conn, REFUND_APPLIED, purchase.account_id, payload, key)
