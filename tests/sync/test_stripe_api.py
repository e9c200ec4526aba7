"""The Stripe calls of sync/stripe_api.py when Stripe cannot be reached: a typed error (the
API answers 502 with it, tests/api/test_stripe.py) and nothing stored."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import Engine, select

from meter.embedded import free_port
from sync.models import T_STRIPE_CUSTOMERS
from sync.pricing import Quote
from sync.settings import Settings
from sync.stripe_api import StripeUnavailable, checkout_credits, client_for

QUOTE = Quote("credits", 50, 500, 0, 0, 500, "usd", ({"step": "total", "amount": 500},))


def test_an_unreachable_stripe_is_stripe_unavailable_and_stores_no_customer(
    engine: Engine,
) -> None:
    settings = Settings(
        stripe_secret_key="sk_test_fake", stripe_api_base=f"http://127.0.0.1:{free_port()}"
    )
    account = f"nostripe-{uuid.uuid4().hex[:10]}"
    with pytest.raises(StripeUnavailable, match="APIConnectionError"):
        checkout_credits(
            engine,
            client_for(settings),
            account_id=account,
            quote=QUOTE,
            pack_id=None,
            success_url="https://a.example/ok",
            cancel_url="https://a.example/cancel",
            request_key="k",
        )
    with engine.connect() as conn:
        stored = conn.execute(
            select(T_STRIPE_CUSTOMERS).where(T_STRIPE_CUSTOMERS.c.account_id == account)
        ).first()
    assert stored is None
