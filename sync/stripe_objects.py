"""Reading Stripe objects as every API version shapes them (sync.purchases applies them).

From 2025-03-31 (basil) on, an invoice names its subscription in `parent.subscription_details`
and its payments only in `invoice_payment` objects (no `payment_intent`, `subscription` or
`charge`); an invoice line names its price in `pricing.price_details` and says whether it is a
proration in `parent.subscription_item_details`; a subscription's period is on its items.
Endpoints pinned to older versions send `invoice.payment_intent`, `invoice.subscription`,
`line.price`, `line.proration` and the period on the subscription. These functions read both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

JSON = dict[str, Any]

# Subscription statuses in the order a subscription moves through them: of two states with
# the same `created` second and period, the later one in this order is the newer.
SUBSCRIPTION_STATUS_ORDER = (
    "incomplete",
    "incomplete_expired",
    "trialing",
    "active",
    "past_due",
    "unpaid",
    "paused",
    "canceled",
)

# Dispute statuses (https://docs.stripe.com/api/disputes/object#dispute_object-status).
# An inquiry has not moved money; a won (or prevented) dispute and a closed inquiry gave it
# back; every other status (needs_response, under_review, lost) has the money withdrawn.
DISPUTE_INQUIRY = ("warning_needs_response", "warning_under_review")
DISPUTE_CLEARED = ("won", "warning_closed", "prevented")
# A dispute moves forward only: an older state delivered late does not undo a newer one.
DISPUTE_STATUS_RANK = {
    "warning_needs_response": 0,
    "warning_under_review": 1,
    "needs_response": 2,
    "under_review": 3,
}
DISPUTE_FINAL_RANK = 9

# A refund moves from pending (or requires_action) to succeeded, failed or canceled; failed
# and canceled are final.
REFUND_RETURNED_NOTHING = ("failed", "canceled")
REFUND_STATUS_RANK = {"pending": 0, "requires_action": 0, "succeeded": 1}
REFUND_FINAL_RANK = 2


@dataclass(frozen=True, slots=True)
class PlanLine:
    """One subscription line of an invoice."""

    price_id: str
    amount_minor: int
    start_s: int
    end_s: int
    proration: bool


def dispute_rank(status: str) -> int:
    return DISPUTE_STATUS_RANK.get(status, DISPUTE_FINAL_RANK)


def refund_rank(status: str) -> int:
    return REFUND_STATUS_RANK.get(status, REFUND_FINAL_RANK)


def subscription_price(sub: JSON) -> str | None:
    for item in _data(sub.get("items")):
        price = item.get("price")
        pid = price.get("id") if isinstance(price, dict) else price
        if isinstance(pid, str):
            return pid
    return None


def subscription_period(sub: JSON) -> tuple[int | None, int | None]:
    """Seconds -> ms, from the first item (2025-03-31 on) or the subscription (before)."""
    items = _data(sub.get("items")) or [{}]
    source = items[0] if "current_period_end" in items[0] else sub
    start, end = source.get("current_period_start"), source.get("current_period_end")
    return (
        start * 1000 if isinstance(start, int) else None,
        end * 1000 if isinstance(end, int) else None,
    )


def invoice_subscription(invoice: JSON) -> str | None:
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    sub = details.get("subscription") or invoice.get("subscription")
    return sub if isinstance(sub, str) else None


def invoice_payment_intents(invoice: JSON) -> list[str]:
    """The invoice's payment intents: `payment_intent` before 2025-03-31, the `payments` list
    when an endpoint includes it after (else they come in `invoice_payment.paid` events)."""
    found = [_id(invoice.get("payment_intent"))]
    for payment in _data(invoice.get("payments")):
        if payment.get("status") in (None, "paid"):
            found.append(_id((payment.get("payment") or {}).get("payment_intent")))
    return [pi for pi in found if pi]


def plan_lines(invoice: JSON) -> list[PlanLine]:
    """The invoice's lines that have a price and a period."""
    lines = []
    for line in _data(invoice.get("lines")):
        details = (line.get("pricing") or {}).get("price_details") or {}
        price = _id(details.get("price") or line.get("price"))
        period = line.get("period") or {}
        sub_item = (line.get("parent") or {}).get("subscription_item_details") or {}
        proration = sub_item.get("proration", line.get("proration"))
        amount = line.get("amount")
        if price and isinstance(period.get("end"), int) and isinstance(amount, int):
            lines.append(
                PlanLine(
                    price, amount, int(period.get("start") or 0), period["end"], proration is True
                )
            )
    return lines


def _data(listing: object) -> list[JSON]:
    data = listing.get("data") if isinstance(listing, dict) else None
    return [x for x in data if isinstance(x, dict)] if isinstance(data, list) else []


def _id(value: object) -> str | None:
    if isinstance(value, dict):  # an expanded object
        value = value.get("id")
    return value if isinstance(value, str) and value else None
