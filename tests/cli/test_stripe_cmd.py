"""`creditmeter stripe sync --since T` and `creditmeter stripe replay EVENT_ID` against the
loopback fake Stripe, on real Redis and SQL."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import insert
from typer.testing import CliRunner

from cli.main import app
from sync import purchases
from sync.context import context
from sync.models import T_PLANS
from sync.purchases import event_status, store_event
from sync.settings import get_settings
from tests import stripe_events
from tests import stripe_fake as sf

runner = CliRunner()


@pytest.fixture
def fake() -> Iterator[sf.FakeStripe]:
    with sf.FakeStripe() as f:
        yield f


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    sql_url: str,
    key_prefix: str,
    tmp_path: Path,
    fake: sf.FakeStripe,
) -> Iterator[None]:
    for name, value in {
        "REDIS_URL": redis_url,
        "DATABASE_URL": sql_url,
        "KEY_PREFIX": key_prefix,
        "DATA_DIR": str(tmp_path),
        "STRIPE_SECRET_KEY": "sk_test_fake",
        "STRIPE_API_BASE": fake.url,
    }.items():
        monkeypatch.setenv(f"CREDITMETER_{name}", value)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def purchase_event(acct: str, credits: int, created: int) -> dict:
    session = sf.checkout_session(
        account_id=acct,
        amount_total=credits * 10,
        metadata={"credit_type": "credits", "credits": str(credits)},
    )
    stripe_events.store_quote(context(get_settings()).engine, session)  # as its checkout did
    return sf.event("checkout.session.completed", session, created=created)


def credits_of(acct: str) -> int:
    w = context(get_settings()).meter().balance(acct, ["credits"]).wallet("credits")
    assert w is not None
    return int(w.balance)


def test_sync_applies_only_the_events_never_received(env: None, fake: sf.FakeStripe) -> None:
    acct = f"sync-{uuid.uuid4().hex[:10]}"
    now = int(time.time())
    received = purchase_event(acct, 10, now - 60)
    missed = [purchase_event(acct, 20, now - 30), purchase_event(acct, 40, now - 20)]
    too_old = purchase_event(acct, 1000, now - 7200)
    for e in (received, *missed, too_old):
        fake.add_event(e)
    ctx = context(get_settings())
    store_event(ctx.engine, received, json.dumps(received))  # the webhook had this one

    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 3600))
    r = runner.invoke(app, ["stripe", "sync", "--since", since])
    assert r.exit_code == 0, r.output
    print(f"\n$ creditmeter stripe sync --since {since}\n{r.output}")
    assert all(e["id"] in r.output for e in missed) and received["id"] not in r.output
    assert "2 were new and applied" in r.output
    assert credits_of(acct) == 60
    assert all(event_status(ctx.engine, e["id"]) == "applied" for e in missed)

    again = runner.invoke(app, ["stripe", "sync", "--since", since])
    assert "0 were new" in again.output and credits_of(acct) == 60


def test_sync_stores_subscription_and_invoice_events_as_sent_and_applies_the_later_ones(
    env: None, fake: sf.FakeStripe
) -> None:
    """Issue 13 item 2: stripe-python 16 reads `*_decimal` fields as Decimal; `stripe sync`
    crashed on them and never reached the events after."""
    acct = f"dec-{uuid.uuid4().hex[:10]}"
    now = int(time.time())
    subscription = sf.example("subscription")
    invoice = sf.example("invoice")
    invoice["lines"]["data"][0]["pricing"]["unit_amount_decimal"] = "2000.5"
    events = [
        sf.event("customer.subscription.updated", subscription, created=now - 50),
        sf.event("invoice.paid", invoice, created=now - 40),
        purchase_event(acct, 20, now - 30),
    ]
    for e in events:
        fake.add_event(e)
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 3600))
    r = runner.invoke(app, ["stripe", "sync", "--since", since])
    print(f"\n$ creditmeter stripe sync --since {since}\n{r.output}")
    assert "Decimal" not in r.output and "3 events from Stripe" in r.output
    engine = context(get_settings()).engine
    for e in events:  # stored exactly as Stripe sent them: "2000", "2000.5" stay strings
        assert purchases.load_event(engine, e["id"]) == e
    assert [line.split()[0] for line in r.output.splitlines()[:3]] == [e["id"] for e in events]
    assert credits_of(acct) == 20


def test_replay_applies_a_stored_event_once_and_an_unknown_one_fails(env: None) -> None:
    acct = f"replay-{uuid.uuid4().hex[:10]}"
    event = purchase_event(acct, 30, int(time.time()))
    store_event(context(get_settings()).engine, event, json.dumps(event))
    first = runner.invoke(app, ["stripe", "replay", event["id"]])
    assert first.exit_code == 0 and "granted 30 credits" in first.output, first.output
    second = runner.invoke(app, ["stripe", "replay", event["id"]])
    assert "already granted 30 credits" in second.output
    assert credits_of(acct) == 30
    missing = runner.invoke(app, ["stripe", "replay", "evt_never"])
    assert missing.exit_code == 1 and "never received" in missing.output


def test_sync_with_stripe_down_is_one_line_and_exit_1(env: None, fake: sf.FakeStripe) -> None:
    fake.fail_with(500)
    r = runner.invoke(app, ["stripe", "sync", "--since", "2026-11-01"])
    assert r.exit_code == 1 and "Stripe event list failed" in r.output
    bad = runner.invoke(app, ["stripe", "sync", "--since", "yesterday"])
    assert bad.exit_code == 1 and "not an RFC 3339" in bad.output


def test_replay_of_an_event_still_waiting_for_another_marks_it_failed(env: None) -> None:
    ctx = context(get_settings())
    price = f"price_{uuid.uuid4().hex[:12]}"
    with ctx.engine.begin() as conn:
        conn.execute(
            insert(T_PLANS),
            [
                {
                    "id": f"plan-{uuid.uuid4().hex[:8]}",
                    "stripe_price_id": price,
                    "allocations": json.dumps({"credits": 10}),
                    "rollover_cap": 0,
                    "discount_percent": 0,
                }
            ],
        )
    now = int(time.time())
    invoice = sf.invoice(
        customer="cus_nobody",
        subscription="sub_nobody",
        price_id=price,
        period_start=now,
        period_end=now + 86400,
        amount_paid=100,
    )
    event = sf.event("invoice.paid", invoice)
    store_event(ctx.engine, event, json.dumps(event))
    r = runner.invoke(app, ["stripe", "replay", event["id"]])
    assert r.exit_code == 1 and "no account known" in r.output
    assert event_status(ctx.engine, event["id"]) == "failed"  # no job retries a replay
