"""Stripe events built from Stripe's own published example objects, as data.

The JSON files are `openapi/fixtures3.json` of the public stripe/openapi repository, trimmed to
the fields creditmeter reads and the ones that show the shape:
- `current/`: commit f6c2a48f (2026-08). Shapes of API versions from 2025-03-31 (basil) on:
  invoices carry `parent.subscription_details` and no `payment_intent`, `subscription` or
  `charge`; payments are `invoice_payment` objects; invoice lines name their price in
  `pricing.price_details` and say `proration` in `parent.subscription_item_details`; a
  subscription's period is on its items.
- `2025-01-27.acacia/`: commit b819eedc (2025-02), the last version before: `invoice.
  payment_intent`, `invoice.subscription`, `line.price`, `line.proration`, the period on the
  subscription, `charge.invoice`.

The builders copy a file and set only what a test is about (ids, amounts, status, periods);
`signed` signs the event's JSON as Stripe signs a webhook delivery.
"""

from __future__ import annotations

import copy
import json
import secrets
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from sync import checkout_quotes
from sync.pricing import Quote
from tests import stripe_fake

JSON = dict[str, Any]
HERE = Path(__file__).parent
CURRENT = "2025-03-31.basil"
ACACIA = "2025-01-27.acacia"
_DIRS = {CURRENT: "current", ACACIA: "2025-01-27.acacia"}
VERSIONS = (CURRENT, ACACIA)


def example(version: str, kind: str) -> JSON:
    """A fresh copy of Stripe's example object `kind` (e.g. "invoice") for `version`."""
    return dict(json.loads((HERE / _DIRS[version] / f"{kind}.json").read_text()))


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def event(version: str, type: str, obj: JSON, *, created: int | None = None) -> JSON:
    e = example(version, "event")
    e.update(
        id=new_id("evt"),
        api_version=version,
        type=type,
        created=int(time.time()) if created is None else created,
        data={"object": copy.deepcopy(obj)},
    )
    return e


def signed(e: JSON, secret: str) -> tuple[str, str]:
    """(payload, Stripe-Signature header) of one delivery."""
    payload = json.dumps(e)
    return payload, stripe_fake.sign(payload, secret)


def checkout_session(
    version: str,
    *,
    account_id: str | None,
    amount_total: int,
    metadata: dict[str, str],
    currency: str = "usd",
    mode: str = "payment",
    conversion: tuple[int, str] | None = None,
) -> JSON:
    """A completed, paid session. `conversion` (amount, currency) makes it an Adaptive Pricing
    session: the customer paid `amount_total` `currency`, the merchant's price was
    `conversion`."""
    s = example(version, "checkout.session")
    s.update(
        id=new_id("cs_test"),
        status="complete",
        payment_status="paid",
        client_reference_id=account_id,
        customer=new_id("cus"),
        amount_subtotal=amount_total,
        amount_total=amount_total,
        currency=currency,
        metadata=metadata,
        mode=mode,
    )
    if mode == "subscription":
        s.update(payment_intent=None, subscription=new_id("sub"), invoice=new_id("in"))
    else:
        s["payment_intent"] = new_id("pi")
    if "currency_conversion" in s:
        s["currency_conversion"] = None
        s["adaptive_pricing"] = {"enabled": conversion is not None}
    if conversion is not None:
        s["currency_conversion"] = {
            "amount_subtotal": conversion[0],
            "amount_total": conversion[0],
            "fx_rate": f"{amount_total / conversion[0]:.6f}",
            "source_currency": conversion[1],
        }
    return s


def charge(version: str, *, payment_intent: str, amount: int, amount_refunded: int = 0) -> JSON:
    c = example(version, "charge")
    c.update(
        id=new_id("ch"),
        amount=amount,
        amount_captured=amount,
        amount_refunded=amount_refunded,
        payment_intent=payment_intent,
        refunded=amount_refunded >= amount,
    )
    return c


def refund(
    version: str, *, payment_intent: str, charge: str, amount: int, status: str = "succeeded"
) -> JSON:
    r = example(version, "refund")
    r.update(
        id=new_id("re"), amount=amount, charge=charge, payment_intent=payment_intent, status=status
    )
    return r


def dispute(
    version: str, *, payment_intent: str, charge: str, amount: int, status: str, id: str = ""
) -> JSON:
    d = example(version, "dispute")
    d.update(
        id=id or new_id("dp"),
        amount=amount,
        charge=charge,
        payment_intent=payment_intent,
        status=status,
    )
    return d


def subscription(
    version: str,
    *,
    customer: str,
    price_id: str,
    status: str,
    period: tuple[int, int],
    id: str = "",
    account_id: str | None = None,
    cancel_at_period_end: bool = False,
) -> JSON:
    s = example(version, "subscription")
    s.update(
        id=id or new_id("sub"),
        customer=customer,
        status=status,
        cancel_at_period_end=cancel_at_period_end,
        cancel_at=period[1] if cancel_at_period_end else None,
        canceled_at=None,
        metadata={"account_id": account_id} if account_id else {},
    )
    item = s["items"]["data"][0]
    item.update(id=new_id("si"), subscription=s["id"])
    item["price"]["id"] = price_id
    # The period moved from the subscription to its items in 2025-03-31.
    holder = item if version == CURRENT else s
    holder["current_period_start"], holder["current_period_end"] = period
    return s


def invoice(
    version: str,
    *,
    customer: str,
    subscription: str,
    lines: list[tuple[str, int, tuple[int, int], bool]],
    billing_reason: str = "subscription_cycle",
    payment_intent: str | None = None,
    subscription_metadata: dict[str, str] | None = None,
) -> JSON:
    """A paid subscription invoice. `lines`: (price id, amount, (start, end), proration).
    `payment_intent` exists on the invoice only before 2025-03-31; later it comes in an
    `invoice_payment` (see `invoice_payment`). `subscription_metadata`: the subscription's,
    which Stripe copies onto its invoices."""
    inv = example(version, "invoice")
    iid = new_id("in")
    total = sum(amount for _, amount, _, _ in lines)
    inv.update(
        id=iid,
        customer=customer,
        billing_reason=billing_reason,
        status="paid",
        amount_due=max(total, 0),
        amount_paid=max(total, 0),
        amount_remaining=0,
        subtotal=total,
        total=total,
    )
    template = inv["lines"]["data"][0]
    inv["lines"]["data"] = [_line(version, template, iid, subscription, *line) for line in lines]
    if version == CURRENT:
        inv["parent"] = {
            "quote_details": None,
            "subscription_details": {
                "metadata": subscription_metadata or {},
                "subscription": subscription,
            },
            "type": "subscription_details",
        }
    else:
        inv.update(subscription=subscription, payment_intent=payment_intent, charge=None)
        inv["subscription_details"] = {"metadata": subscription_metadata or {}}
    return inv


def _line(
    version: str,
    template: JSON,
    invoice_id: str,
    subscription: str,
    price_id: str,
    amount: int,
    period: tuple[int, int],
    proration: bool,
) -> JSON:
    line = copy.deepcopy(template)
    line.update(
        id=new_id("il"),
        invoice=invoice_id,
        amount=amount,
        period={"start": period[0], "end": period[1]},
    )
    if version == CURRENT:
        line["parent"] = {
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": proration,
                "proration_details": {"credited_items": None},
                "subscription": subscription,
                "subscription_item": new_id("si"),
            },
            "type": "subscription_item_details",
        }
        line["pricing"] = {
            "type": "price_details",
            "price_details": {"price": price_id, "product": "prod_QXg1hqf4jFNsqG"},
            "unit_amount_decimal": str(amount),
        }
    else:
        line["price"].update(id=price_id, type="recurring", unit_amount=amount)
        line["price"]["recurring"] = {"interval": "month", "interval_count": 1}
        line.update(proration=proration, type="subscription", subscription=subscription)
    return line


def invoice_payment(*, invoice_id: str, payment_intent: str, amount: int) -> JSON:
    """The payment of an invoice (API versions from 2025-03-31 on)."""
    p = example(CURRENT, "invoice_payment")
    p.update(
        id=new_id("inpay"),
        invoice=invoice_id,
        amount_paid=amount,
        amount_requested=amount,
        currency="usd",
        livemode=False,
        status="paid",
        payment={"type": "payment_intent", "payment_intent": payment_intent},
        status_transitions={"canceled_at": None, "paid_at": int(time.time())},
    )
    return p


def store_quote(engine: Engine, session: JSON, *, credits: int | None = None) -> None:
    """Stores the quote creditmeter keeps when it creates `session` (sync.stripe_api): the
    session's metadata, its account and what it charges in the catalog's currency."""
    meta = session["metadata"]
    conversion = session.get("currency_conversion")
    amount, currency = (
        (conversion["amount_total"], conversion["source_currency"])
        if conversion
        else (session["amount_total"], session["currency"])
    )
    n = int(meta["credits"]) if credits is None else credits
    quote = Quote(
        credit_type=meta["credit_type"],
        credits=n,
        subtotal=amount,
        discount_percent=0,
        discount=0,
        amount=amount,
        currency=currency,
        breakdown=(),
        pack_id=meta.get("pack_id") or None,
    )
    account = session["client_reference_id"] or meta["account_id"]
    checkout_quotes.store_quote(engine, session["id"], account, quote)
