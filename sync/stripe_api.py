"""The calls creditmeter makes to Stripe: a customer per account, Checkout Sessions, and the
event list `creditmeter stripe sync` reads. Every call carries an idempotency key, so the
client's own network retries (and ours) never create a second object. Stripe's errors become
one of three exceptions, by who can mend them (`_classified`): the client, the operator, time.

`CREDITMETER_STRIPE_API_BASE` points the client elsewhere (tests use a loopback fake).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import stripe
from sqlalchemy import Engine, delete, select

from meter.times import now_ms
from sync import limits, topup_attempts, topup_store
from sync.checkout_quotes import store_quote
from sync.db import write_transaction
from sync.models import T_ACCOUNTS, T_STRIPE_CUSTOMERS
from sync.pricing import Quote, UnknownPlan, get_plan
from sync.settings import Settings
from sync.sqlops import insert_ignore

NETWORK_RETRIES = 2  # the client retries a dropped connection with the same idempotency key
METADATA_VALUE_LEN_MAX = 500  # Stripe's limit per metadata value
log = logging.getLogger("creditmeter.stripe")


class StripeUnavailable(RuntimeError):
    """Stripe could not be reached, failed (5xx) or asked us to slow down (429): the same
    request may succeed later (the API answers 502 stripe-unavailable)."""


class StripeRefused(ValueError):
    """Stripe refused the request for good (a 4xx other than 401, 403 and 429): sending it
    again cannot succeed. The text ends with Stripe's own message; `code` and `param` are as
    Stripe sent them (amount_too_small, resource_missing...). The API answers 422
    stripe-refused."""

    def __init__(self, what: str, message: str, *, code: str | None, param: str | None) -> None:
        super().__init__(f"Stripe {what} refused: {message}")
        self.code = code
        self.param = param


class StripeIdempotencyReused(StripeRefused):
    """Stripe refused an idempotency key sent before with other parameters (the API answers
    422 idempotency-key-reused: the client's mistake, not an outage)."""


class PaymentFailed(StripeRefused):
    """Stripe answered a payment with a card error (402): declined, or authentication
    required for a payment made while the customer is away. `payment_intent_id` names the
    payment intent Stripe kept for it, when it sent one."""

    def __init__(self, message: str, *, code: str | None, payment_intent_id: str | None) -> None:
        super().__init__("payment", message, code=code, param=None)
        self.payment_intent_id = payment_intent_id


class StripeNotConfigured(RuntimeError):
    """CREDITMETER_STRIPE_SECRET_KEY is not set, or Stripe refuses it (401, 403): no request
    of a client can succeed until an operator fixes the key (the API answers 503)."""


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
    except stripe.StripeError as exc:
        raise _classified(what, exc) from exc


def _classified(what: str, exc: stripe.StripeError) -> Exception:
    """Stripe's answer as one of our three failures, by who can mend it: the client
    (StripeRefused), the operator (StripeNotConfigured) or time (StripeUnavailable)."""
    message = exc.user_message or str(exc)
    status = exc.http_status or 0
    if isinstance(exc, stripe.IdempotencyError):
        return StripeIdempotencyReused(what, message, code=exc.code, param=None)
    if status in (401, 403):
        return StripeNotConfigured(f"Stripe {what} refused the secret key: {message}")
    if 400 <= status < 500 and status != 429:
        param = getattr(exc, "param", None)
        return StripeRefused(what, message, code=exc.code, param=param)
    return StripeUnavailable(f"Stripe {what} failed: {type(exc).__name__}: {message}")


def customer_for(engine: Engine, client: stripe.StripeClient, account_id: str) -> str:
    """The account's Stripe customer, created on its first checkout and reused after. Two
    first checkouts at once send one idempotency key: Stripe makes one customer."""
    known = _stored_customer(engine, account_id)
    if known:
        return known
    return _new_customer(engine, client, account_id, _digest(account_id))


def _new_customer(
    engine: Engine, client: stripe.StripeClient, account_id: str, key_digest: str
) -> str:
    params: dict[str, Any] = {"metadata": {"account_id": account_id}}
    key = f"creditmeter-customer-{key_digest}"
    email = _account_email(engine, account_id)
    if email:
        # Stripe refuses a key sent again with other parameters: the email is part of it.
        params["email"] = email
        key = f"{key}-{_digest(email)}"
    customer = _call(
        "customer create",
        client.v1.customers.create,
        params=params,
        options={"idempotency_key": key},
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


def _replace_customer(
    engine: Engine, client: stripe.StripeClient, account_id: str, stale: str
) -> str:
    """A new customer for an account whose stored one Stripe no longer knows (deleted, or
    made with the other mode's key). The idempotency key names the stale customer: two
    checkouts that both find it stale make one new customer, and a later stale one makes
    another."""
    log.warning("stripe customer %s of %s is gone at Stripe: creating another", stale, account_id)
    write_transaction(
        engine,
        lambda conn: conn.execute(
            delete(T_STRIPE_CUSTOMERS).where(
                T_STRIPE_CUSTOMERS.c.account_id == account_id,
                T_STRIPE_CUSTOMERS.c.customer_id == stale,
            )
        ),
    )
    return _new_customer(engine, client, account_id, _digest(account_id, stale))


def _account_email(engine: Engine, account_id: str) -> str | None:
    """The email an admin set on the account (PATCH /v1/accounts/{id}), given to Stripe when
    the customer is made; a later change is not sent to an existing customer."""
    with engine.connect() as conn:
        email: str | None = conn.execute(
            select(T_ACCOUNTS.c.email).where(T_ACCOUNTS.c.id == account_id)
        ).scalar_one_or_none()
    return email


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
    """A payment-mode session for a pack or a custom amount, priced by `quote`. An account
    with an auto top-up rule has opted in: its card is saved for payments made while it is
    away (`setup_future_usage`), and `save_card` tells the event handler to keep it."""
    name = f"{quote.credits} {quote.credit_type}" + (f" ({pack_id})" if pack_id else "")
    metadata = {
        "account_id": account_id,
        "credit_type": quote.credit_type,
        "credits": str(quote.credits),
        "amount": str(quote.amount),
        "pack_id": pack_id or "",
        "quote": _compact(quote.breakdown),
    }
    payment_intent_data: dict[str, Any] = {"metadata": metadata}
    if topup_store.opted_in(engine, account_id):
        metadata["save_card"] = "1"
        payment_intent_data["setup_future_usage"] = "off_session"
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
            "payment_intent_data": payment_intent_data,
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
    store_quote(engine, session.id, account_id, quote)
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
    # Stripe prices the plan: amount_total comes from its price (None until it knows it).
    # stripe-python 16's StripeObject has attributes only (no dict .get()).
    amount = session.amount_total
    return Checkout(
        session.id,
        session.url,
        amount if isinstance(amount, int) else None,
        session.currency,
        "subscription",
    )


def _create_session(
    engine: Engine,
    client: stripe.StripeClient,
    account_id: str,
    request_key: str,
    params: dict[str, Any],
) -> Any:
    """A Checkout Session of the account's customer, keyed by the account, the request and
    the customer. A stored customer Stripe answers `resource_missing` for is replaced once."""
    customer = customer_for(engine, client, account_id)
    try:
        return _session_of(client, account_id, request_key, customer, params)
    except StripeRefused as exc:
        if exc.code != "resource_missing" or exc.param != "customer":
            raise
    customer = _replace_customer(engine, client, account_id, customer)
    return _session_of(client, account_id, request_key, customer, params)


def _session_of(
    client: stripe.StripeClient,
    account_id: str,
    request_key: str,
    customer: str,
    params: dict[str, Any],
) -> Any:
    # The customer is in the key: the retry with a new customer is another request for
    # Stripe, and a client's retry after it replays that session.
    key = f"creditmeter-checkout-{_digest(account_id, request_key, customer)}"
    return _call(
        "checkout session create",
        client.v1.checkout.sessions.create,
        params={**params, "customer": customer, "client_reference_id": account_id},
        options={"idempotency_key": key},
    )


def charge_saved_card(
    client: stripe.StripeClient, attempt: topup_attempts.Attempt, card: topup_store.SavedCard
) -> Any:
    """An auto top-up: a payment intent confirmed at once on the saved card, the customer
    away (off_session). The attempt's id is the idempotency key, so a retried job gets the
    first answer again and pays once. Raises PaymentFailed for a card error."""
    assert attempt.amount_minor is not None and attempt.currency and attempt.credits
    metadata = {
        "account_id": attempt.account_id,
        "credit_type": attempt.credit_type,
        "credits": str(attempt.credits),
        "topup_attempt_id": attempt.id,
    }
    params: dict[str, Any] = {
        "amount": attempt.amount_minor,
        "currency": attempt.currency,
        "customer": card.customer_id,
        "payment_method": card.payment_method_id,
        "off_session": True,
        "confirm": True,
        "description": f"Auto top-up: {attempt.credits} {attempt.credit_type}",
        "metadata": metadata,
    }
    try:
        return client.v1.payment_intents.create(
            params=params,  # type: ignore[arg-type]  # a plain dict, as _call passes
            options={"idempotency_key": f"creditmeter-{attempt.id}"},
        )
    except stripe.CardError as exc:
        intent = getattr(exc.error, "payment_intent", None) if exc.error else None
        raise PaymentFailed(
            exc.user_message or str(exc),
            code=exc.code,
            payment_intent_id=getattr(intent, "id", None),
        ) from exc
    except stripe.StripeError as exc:
        raise _classified("payment intent create", exc) from exc


def payment_intent(client: stripe.StripeClient, payment_intent_id: str) -> Any:
    return _call("payment intent retrieve", client.v1.payment_intents.retrieve, payment_intent_id)


def events_since(client: stripe.StripeClient, since_s: int) -> Iterator[dict[str, Any]]:
    """Every event Stripe created at or after `since_s` (Stripe keeps 30 days), newest
    first, each as the JSON Stripe sent (see `as_sent`)."""
    page = _call(
        "event list",
        client.v1.events.list,
        params={"created": {"gte": since_s}, "limit": limits.STRIPE_SYNC_PAGE},
    )
    try:
        for event in page.auto_paging_iter():
            yield as_sent(event)
    except stripe.StripeError as exc:
        raise _classified("event list", exc) from exc


def as_sent(obj: stripe.StripeObject) -> dict[str, Any]:
    """A Stripe object as plain JSON values. stripe-python 16 turns the `*_decimal` strings
    (unit_amount_decimal, quantity_decimal...) into Decimal, which json cannot write; they
    go back to the strings Stripe sent ("2000", "0.5"), exactly as a webhook delivers them."""
    text = json.dumps(obj.to_dict(), default=_decimal_text)
    return dict(json.loads(text))


def _decimal_text(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def _compact(value: Any) -> str:
    """The quote's breakdown as JSON when it fits a metadata value (else left out: the
    credits and amount fields say what was bought)."""
    text = json.dumps(value, separators=(",", ":"))
    return text if len(text) <= METADATA_VALUE_LEN_MAX else ""
