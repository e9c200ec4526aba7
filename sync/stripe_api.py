"""The calls creditmeter makes to Stripe: a customer per account, Checkout Sessions, and the
event list `creditmeter stripe sync` reads. Every call carries an idempotency key, so the
client's own network retries (and ours) never create a second object.

`CREDITMETER_STRIPE_API_BASE` points the client elsewhere (tests use a loopback fake).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import stripe
from sqlalchemy import Engine, select

from meter.times import now_ms
from sync import limits
from sync.db import write_transaction
from sync.models import T_STRIPE_CUSTOMERS
from sync.pricing import Quote, UnknownPlan, get_plan
from sync.settings import Settings
from sync.sqlops import insert_ignore

NETWORK_RETRIES = 2  # the client retries a dropped connection with the same idempotency key
METADATA_VALUE_LEN_MAX = 500  # Stripe's limit per metadata value


class StripeUnavailable(RuntimeError):
    """Stripe could not be reached or refused the call (the API answers 502)."""


class StripeIdempotencyReused(ValueError):
    """Stripe refused an idempotency key sent before with other parameters (the API answers
    422 idempotency-key-reused: the client's mistake, not an outage)."""


class StripeNotConfigured(RuntimeError):
    """CREDITMETER_STRIPE_SECRET_KEY is not set."""


@dataclass(frozen=True, slots=True)
class Checkout:
    id: str
    url: str
    amount: int | None  # minor units; Stripe computes it for plans
    currency: str | None
    mode: str


def client_for(settings: Settings) -> stripe.StripeClient:
    if not settings.stripe_secret_key:
        raise StripeNotConfigured(
            "purchases are disabled: CREDITMETER_STRIPE_SECRET_KEY is not set"
        )
    return stripe.StripeClient(
        settings.stripe_secret_key,
        base_addresses={"api": settings.stripe_api_base},
        max_network_retries=NETWORK_RETRIES,
        http_client=stripe.HTTPXClient(timeout=limits.STRIPE_TIMEOUT_S, allow_sync_methods=True),
    )


def _call(what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except stripe.IdempotencyError as exc:
        raise StripeIdempotencyReused(f"Stripe {what} refused: {exc.user_message or exc}") from exc
    except stripe.StripeError as exc:
        raise StripeUnavailable(f"Stripe {what} failed: {type(exc).__name__}: {exc}") from exc


def customer_for(engine: Engine, client: stripe.StripeClient, account_id: str) -> str:
    """The account's Stripe customer, created on its first checkout and reused after. Two
    first checkouts at once send one idempotency key: Stripe makes one customer."""
    known = _stored_customer(engine, account_id)
    if known:
        return known
    customer = _call(
        "customer create",
        client.v1.customers.create,
        params={"metadata": {"account_id": account_id}},
        options={"idempotency_key": f"creditmeter-customer-{_digest(account_id)}"},
    )
    write_transaction(
        engine,
        lambda conn: conn.execute(
            insert_ignore(conn, T_STRIPE_CUSTOMERS),
            [{"account_id": account_id, "customer_id": customer.id, "created_at_ms": now_ms()}],
        ),
    )
    stored = _stored_customer(engine, account_id)  # the first of two racing checkouts wins
    assert stored is not None
    return stored


def _stored_customer(engine: Engine, account_id: str) -> str | None:
    with engine.connect() as conn:
        found = conn.execute(
            select(T_STRIPE_CUSTOMERS.c.customer_id).where(
                T_STRIPE_CUSTOMERS.c.account_id == account_id
            )
        ).scalar_one_or_none()
    return None if found is None else str(found)


def checkout_credits(
    engine: Engine,
    client: stripe.StripeClient,
    *,
    account_id: str,
    quote: Quote,
    pack_id: str | None,
    success_url: str,
    cancel_url: str,
    request_key: str,
) -> Checkout:
    """A payment-mode session for a pack or a custom amount, priced by `quote`."""
    name = f"{quote.credits} {quote.credit_type}" + (f" ({pack_id})" if pack_id else "")
    metadata = {
        "account_id": account_id,
        "credit_type": quote.credit_type,
        "credits": str(quote.credits),
        "amount": str(quote.amount),
        "pack_id": pack_id or "",
        "quote": _compact(quote.breakdown),
    }
    session = _create_session(
        engine,
        client,
        account_id,
        request_key,
        {
            "mode": "payment",
            "success_url": success_url,
            "cancel_url": cancel_url,
            "metadata": metadata,
            "payment_intent_data": {"metadata": metadata},
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": quote.currency,
                        "unit_amount": quote.amount,
                        "product_data": {"name": name},
                    },
                }
            ],
        },
    )
    return Checkout(session.id, session.url, quote.amount, quote.currency, "payment")


def checkout_plan(
    engine: Engine,
    client: stripe.StripeClient,
    *,
    account_id: str,
    plan_id: str,
    success_url: str,
    cancel_url: str,
    request_key: str,
) -> Checkout:
    """A subscription-mode session for a plan; each paid invoice then grants its credits."""
    plan = get_plan(engine, plan_id)
    if plan is None or not plan.active:
        raise UnknownPlan("plan_id", f"no active plan {plan_id!r}")
    metadata = {"account_id": account_id, "plan_id": plan_id}
    session = _create_session(
        engine,
        client,
        account_id,
        request_key,
        {
            "mode": "subscription",
            "success_url": success_url,
            "cancel_url": cancel_url,
            "metadata": metadata,
            "subscription_data": {"metadata": metadata},
            "line_items": [{"price": plan.stripe_price_id, "quantity": 1}],
        },
    )
    amount = session.get("amount_total")
    return Checkout(
        session.id,
        session.url,
        amount if isinstance(amount, int) else None,
        session.get("currency"),
        "subscription",
    )


def _create_session(
    engine: Engine,
    client: stripe.StripeClient,
    account_id: str,
    request_key: str,
    params: dict[str, Any],
) -> Any:
    """A Checkout Session of the account's customer, keyed by the account and the request."""
    return _call(
        "checkout session create",
        client.v1.checkout.sessions.create,
        params={
            **params,
            "customer": customer_for(engine, client, account_id),
            "client_reference_id": account_id,
        },
        options={"idempotency_key": f"creditmeter-checkout-{_digest(account_id, request_key)}"},
    )


def events_since(client: stripe.StripeClient, since_s: int) -> Iterator[dict[str, Any]]:
    """Every event Stripe created at or after `since_s` (Stripe keeps 30 days), newest first."""
    page = _call(
        "event list",
        client.v1.events.list,
        params={"created": {"gte": since_s}, "limit": limits.STRIPE_SYNC_PAGE},
    )
    try:
        for event in page.auto_paging_iter():
            yield event.to_dict()
    except stripe.StripeError as exc:
        raise StripeUnavailable(f"Stripe event list failed: {exc}") from exc


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def _compact(value: Any) -> str:
    """The quote's breakdown as JSON when it fits a metadata value (else left out: the
    credits and amount fields say what was bought)."""
    text = json.dumps(value, separators=(",", ":"))
    return text if len(text) <= METADATA_VALUE_LEN_MAX else ""
