"""Buying credits over HTTP, end to end and off the network: `POST /v1/checkout/sessions`
against a loopback fake Stripe API (tests/stripe_fake.py), and Stripe's signed webhook
deliveries to `POST /v1/webhooks/stripe`, applied by a real `creditmeter worker --burst`."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import stripe
from sqlalchemy import Engine, select

from meter.keys import Keys
from sync.checkout_quotes import StoredQuote, quote_for
from sync.models import T_PURCHASES, T_STRIPE_CUSTOMERS, T_STRIPE_EVENTS
from tests import stripe_events
from tests import stripe_fake as sf
from tests.api.conftest import STRIPE_WEBHOOK_SECRET, account, bearer
from tests.api.server import creditmeter_bin

CATALOG = """
[[packs]]
id = "credits-small"
credits = 50
credit_type = "credits"
amount = 500
currency = "usd"

[prices.credits]
currency = "usd"
mode = "graduated"
minimum = 10
slabs = [{ from = 1, to = 999, unit_amount = 10 }, { from = 1000, unit_amount = 8 }]

[[plans]]
id = "pro"
stripe_price_id = "price_cm_pro"
allocations = { credits = 1000 }
rollover_cap = 0
discount_percent = 0

[[plans]]
id = "typo"
stripe_price_id = "price_cm_typo"
allocations = { credits = 10 }
rollover_cap = 0
discount_percent = 0
"""
PLAN_PRICE_MINOR = 2000  # price_cm_pro at the fake Stripe; price_cm_typo is not there


@pytest.fixture(scope="module")
def api_env(
    stripe_api_env: dict[str, str], api_data_dir: Path, fake_stripe: sf.FakeStripe
) -> dict[str, str]:
    fake_stripe.add_price(PLAN_PRICE_MINOR, id="price_cm_pro")
    catalog = api_data_dir / "catalog.toml"
    catalog.write_text(CATALOG)
    subprocess.run(
        [creditmeter_bin(), "catalog", "apply", str(catalog)],
        env=stripe_api_env,
        check=True,
        capture_output=True,
    )
    return stripe_api_env


def deliver(http: httpx.Client, event: dict[str, Any], **sign: Any) -> httpx.Response:
    payload = json.dumps(event)
    header = sf.sign(payload, STRIPE_WEBHOOK_SECRET, **sign)
    return http.post(
        "/v1/webhooks/stripe",
        content=payload,
        headers={"Stripe-Signature": header, "Content-Type": "application/json"},
    )


def work(api_env: dict[str, str]) -> None:
    subprocess.run(
        [creditmeter_bin(), "worker", "--burst"], env=api_env, check=True, capture_output=True
    )


def balance(http: httpx.Client, key: str, acct: str) -> int:
    r = http.get(f"/v1/accounts/{acct}/balance", headers=bearer(key))
    assert r.status_code == 200, r.text
    rows = [b for b in r.json()["balances"] if b["credit_type"] == "credits"]
    return int(rows[0]["balance"]) if rows else 0


def stored(engine: Engine, event_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(T_STRIPE_EVENTS).where(T_STRIPE_EVENTS.c.id == event_id)).first()


# --- checkout ------------------------------------------------------------------------------


def test_checkout_of_a_pack_creates_one_customer_and_a_session_with_the_quote(
    http: httpx.Client, meter_key: str, fake_stripe: sf.FakeStripe, api_engine: Engine
) -> None:
    acct = account("buyer")
    body = {
        "account_id": acct,
        "pack_id": "credits-small",
        "success_url": "https://app.example/ok",
        "cancel_url": "https://app.example/cancel",
    }
    r = http.post("/v1/checkout/sessions", json=body, headers=bearer(meter_key))
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["id"].startswith("cs_test_") and out["url"].endswith(out["id"])
    assert (out["amount"], out["currency"], out["mode"]) == (500, "usd", "payment")
    (session_call,) = [
        c
        for c in fake_stripe.calls("POST", "/v1/checkout/sessions")
        if c.params["client_reference_id"] == acct
    ]
    p = session_call.params
    assert p["mode"] == "payment"
    assert p["metadata"]["credits"] == "50" and p["metadata"]["credit_type"] == "credits"
    assert p["metadata"]["amount"] == "500" and json.loads(p["metadata"]["quote"])
    assert p["line_items"][0]["price_data"]["unit_amount"] == "500"
    assert session_call.headers["idempotency-key"].startswith("creditmeter-checkout-")

    # A custom amount for the same account reuses its customer.
    custom = {**body, "pack_id": None, "credit_type": "credits", "credits": 1200}
    del custom["pack_id"]
    r2 = http.post("/v1/checkout/sessions", json=custom, headers=bearer(meter_key))
    assert r2.status_code == 201, r2.text
    assert r2.json()["amount"] == 999 * 10 + 201 * 8
    customers = [
        c
        for c in fake_stripe.calls("POST", "/v1/customers")
        if c.params["metadata"]["account_id"] == acct
    ]
    assert len(customers) == 1
    assert customers[0].headers["idempotency-key"].startswith("creditmeter-customer-")
    with api_engine.connect() as conn:
        linked = conn.execute(
            select(T_STRIPE_CUSTOMERS.c.customer_id).where(T_STRIPE_CUSTOMERS.c.account_id == acct)
        ).scalar_one()
    sessions = [
        c
        for c in fake_stripe.calls("POST", "/v1/checkout/sessions")
        if c.params["client_reference_id"] == acct
    ]
    assert {c.params["customer"] for c in sessions} == {linked}


def test_the_accounts_email_is_given_to_its_new_stripe_customer(
    http: httpx.Client, meter_key: str, admin_key: str, fake_stripe: sf.FakeStripe
) -> None:
    acct = account("mailed")
    made = http.post(
        f"/v1/accounts/{acct}/grants",
        json={"credit_type": "credits", "amount": 1, "category": "promotional"},
        headers={**bearer(admin_key), "Idempotency-Key": account("k")},
    )
    assert made.status_code == 201, made.text
    patched = http.patch(
        f"/v1/accounts/{acct}", json={"email": "ada@example.com"}, headers=bearer(admin_key)
    )
    assert patched.status_code == 200, patched.text
    body = {
        "account_id": acct,
        "pack_id": "credits-small",
        "success_url": "https://app.example/ok",
        "cancel_url": "https://app.example/cancel",
    }
    r = http.post("/v1/checkout/sessions", json=body, headers=bearer(meter_key))
    assert r.status_code == 201, r.text
    (created,) = [
        c
        for c in fake_stripe.calls("POST", "/v1/customers")
        if c.params["metadata"]["account_id"] == acct
    ]
    assert created.params["email"] == "ada@example.com"


def test_checkout_below_the_minimum_is_422_and_stripe_down_is_502(
    http: httpx.Client, meter_key: str, fake_stripe: sf.FakeStripe
) -> None:
    base = {
        "account_id": account("x"),
        "success_url": "https://a.example/s",
        "cancel_url": "https://a.example/c",
    }
    low = http.post(
        "/v1/checkout/sessions",
        json={**base, "credit_type": "credits", "credits": 9},
        headers=bearer(meter_key),
    )
    assert low.status_code == 422 and low.headers["content-type"] == "application/problem+json"
    assert low.json()["errors"][0]["field"].startswith("body.credits")
    both = http.post(
        "/v1/checkout/sessions",
        json={**base, "pack_id": "credits-small", "credit_type": "credits", "credits": 20},
        headers=bearer(meter_key),
    )
    assert both.status_code == 422
    fake_stripe.fail_with(500)
    try:
        down = http.post(
            "/v1/checkout/sessions",
            json={**base, "pack_id": "credits-small"},
            headers=bearer(meter_key),
        )
    finally:
        fake_stripe.fail_with(None)
    assert down.status_code == 502, down.text
    assert down.json()["type"] == "urn:creditmeter:problem:stripe-unavailable"


# --- issue 13: plan checkout, Stripe's refusals, a gone customer, the stored quote ----------

URLS = {"success_url": "https://app.example/ok", "cancel_url": "https://app.example/cancel"}


def sessions_of(fake: sf.FakeStripe, acct: str) -> list[sf.RecordedRequest]:
    return [
        c
        for c in fake.calls("POST", "/v1/checkout/sessions")
        if c.params.get("client_reference_id") == acct
    ]


def test_plan_checkout_answers_the_session_stripe_created_with_its_amount(
    http: httpx.Client, meter_key: str, fake_stripe: sf.FakeStripe
) -> None:
    acct = account("plan")
    body = {"account_id": acct, "plan_id": "pro", **URLS}
    r = http.post("/v1/checkout/sessions", json=body, headers=bearer(meter_key))
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["id"].startswith("cs_test_") and out["url"].endswith(out["id"])
    assert (out["amount"], out["currency"], out["mode"]) == (
        PLAN_PRICE_MINOR,
        "usd",
        "subscription",
    )
    (call,) = sessions_of(fake_stripe, acct)
    assert call.params["line_items"] == [{"price": "price_cm_pro", "quantity": "1"}]
    assert call.params["subscription_data"]["metadata"] == {"account_id": acct, "plan_id": "pro"}


def test_stripe_refusals_are_422_with_stripe_message_and_outages_stay_502(
    http: httpx.Client, meter_key: str, fake_stripe: sf.FakeStripe
) -> None:
    acct = account("refused")
    typo = http.post(
        "/v1/checkout/sessions",
        json={"account_id": acct, "plan_id": "typo", **URLS},
        headers=bearer(meter_key),
    )
    assert typo.status_code == 422, typo.text
    assert typo.headers["content-type"] == "application/problem+json"
    problem = typo.json()
    assert problem["type"] == "urn:creditmeter:problem:stripe-refused"
    assert "No such price: 'price_cm_typo'" in problem["detail"]
    assert (problem["stripe_code"], problem["stripe_param"]) == (
        "resource_missing",
        "line_items[0][price]",
    )

    pack = {"account_id": acct, "pack_id": "credits-small", **URLS}
    for status, expected, slug in (
        (400, 422, "stripe-refused"),
        (404, 422, "stripe-refused"),
        (401, 503, "stripe-not-configured"),
        (429, 502, "stripe-unavailable"),
        (500, 502, "stripe-unavailable"),
        (503, 502, "stripe-unavailable"),
    ):
        fake_stripe.fail_with(status)
        try:
            r = http.post("/v1/checkout/sessions", json=pack, headers=bearer(meter_key))
        finally:
            fake_stripe.fail_with(None)
        assert r.status_code == expected, (status, r.text)
        assert r.json()["type"] == f"urn:creditmeter:problem:{slug}", status
        if expected == 422:
            assert f"Injected failure (HTTP {status})." in r.json()["detail"]


def test_a_purchase_stripe_would_refuse_is_422_before_any_call_to_stripe(
    http: httpx.Client, meter_key: str, fake_stripe: sf.FakeStripe
) -> None:
    acct = account("tiny")
    calls = len(fake_stripe.requests)
    # 999 x 10 + 12,499,001 x 8 cents: past Stripe's eight digits. The check is made on the
    # final amount (a plan's discount may also take a purchase below Stripe's minimum).
    huge = http.post(
        "/v1/checkout/sessions",
        json={"account_id": acct, "credit_type": "credits", "credits": 12_500_000, **URLS},
        headers=bearer(meter_key),
    )
    assert huge.status_code == 422, huge.text
    assert huge.json()["errors"][0]["field"] == "body.amount"
    assert "above Stripe's maximum amount of 99999999" in huge.text
    assert len(fake_stripe.requests) == calls


def test_a_customer_gone_at_stripe_is_recreated_once_and_the_checkout_succeeds(
    http: httpx.Client,
    meter_key: str,
    fake_stripe: sf.FakeStripe,
    api_engine: Engine,
) -> None:
    acct = account("stale")
    body = {"account_id": acct, "pack_id": "credits-small", **URLS}

    def checkout() -> httpx.Response:
        return http.post("/v1/checkout/sessions", json=body, headers=bearer(meter_key))

    def linked() -> str:
        with api_engine.connect() as conn:
            return str(
                conn.execute(
                    select(T_STRIPE_CUSTOMERS.c.customer_id).where(
                        T_STRIPE_CUSTOMERS.c.account_id == acct
                    )
                ).scalar_one()
            )

    assert checkout().status_code == 201
    first = linked()
    stripe_client = sf_client(fake_stripe)
    for _ in range(2):  # deleted in the Dashboard, then again: each time one new customer
        stale = linked()
        stripe_client.v1.customers.delete(stale)
        r = checkout()
        assert r.status_code == 201, r.text
        assert linked() != stale
        assert sessions_of(fake_stripe, acct)[-1].params["customer"] == linked()
    customers = [
        c
        for c in fake_stripe.calls("POST", "/v1/customers")
        if c.params["metadata"]["account_id"] == acct
    ]
    assert len(customers) == 3 and linked() != first
    # Each stale customer was tried once: 1 + 2 x (stale, then new) sessions.
    assert len(sessions_of(fake_stripe, acct)) == 5


def sf_client(fake: sf.FakeStripe) -> stripe.StripeClient:
    return stripe.StripeClient(
        "sk_test_fake", base_addresses={"api": fake.url}, max_network_retries=0
    )


def test_each_credits_checkout_stores_its_quote_by_session_id(
    http: httpx.Client, meter_key: str, api_engine: Engine
) -> None:
    acct = account("quoted")
    pack = http.post(
        "/v1/checkout/sessions",
        json={"account_id": acct, "pack_id": "credits-small", **URLS},
        headers=bearer(meter_key),
    )
    custom = http.post(
        "/v1/checkout/sessions",
        json={"account_id": acct, "credit_type": "credits", "credits": 1200, **URLS},
        headers=bearer(meter_key),
    )
    plan = http.post(
        "/v1/checkout/sessions",
        json={"account_id": acct, "plan_id": "pro", **URLS},
        headers=bearer(meter_key),
    )
    assert {r.status_code for r in (pack, custom, plan)} == {201}
    with api_engine.connect() as conn:
        by_pack = quote_for(conn, pack.json()["id"])
        by_custom = quote_for(conn, custom.json()["id"])
        assert quote_for(conn, plan.json()["id"]) is None  # a plan grants its allocations
        assert quote_for(conn, "cs_test_never") is None
    assert by_pack == StoredQuote(
        pack.json()["id"], acct, "credits", 50, 500, "usd", "credits-small"
    )
    assert by_custom == StoredQuote(
        custom.json()["id"], acct, "credits", 1200, 999 * 10 + 201 * 8, "usd", None
    )


# --- webhook -------------------------------------------------------------------------------


def _purchase_event(
    engine: Engine, acct: str, credits: int = 50, amount: int = 500
) -> dict[str, Any]:
    """A completed checkout of a session creditmeter created (its quote stored)."""
    session = sf.checkout_session(
        account_id=acct,
        amount_total=amount,
        metadata={"credit_type": "credits", "credits": str(credits), "pack_id": "credits-small"},
    )
    stripe_events.store_quote(engine, session)
    return sf.event("checkout.session.completed", session)


def test_a_signed_purchase_event_is_stored_enqueued_and_granted_by_the_worker(
    http: httpx.Client, api_env: dict[str, str], read_key: str, api_engine: Engine
) -> None:
    acct = account("paid")
    event = _purchase_event(api_engine, acct)
    took_ms = []
    for e in [event] + [sf.event("customer.created", {"object": "customer"}) for _ in range(20)]:
        t0 = time.perf_counter()
        r = deliver(http, e)
        took_ms.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200 and r.json() == {"received": True, "duplicate": False}
    took_ms.sort()
    print(f"\nwebhook answered in {took_ms[10]:.1f} ms (median of 21), max {took_ms[-1]:.1f} ms")
    assert stored(api_engine, event["id"]).status == "received"
    work(api_env)
    assert balance(http, read_key, acct) == 50
    assert stored(api_engine, event["id"]).status == "applied"
    again = deliver(http, event)
    assert again.json() == {"received": True, "duplicate": True}
    work(api_env)
    assert balance(http, read_key, acct) == 50


def test_50_concurrent_deliveries_of_one_event_store_it_once_and_grant_once(
    api_url: str, api_env: dict[str, str], read_key: str, api_engine: Engine
) -> None:
    acct = account("burst")
    event = _purchase_event(api_engine, acct, credits=100, amount=900)
    barrier = threading.Barrier(50)
    answers: list[dict[str, Any]] = []

    def one() -> None:
        with httpx.Client(base_url=api_url, timeout=60) as c:
            barrier.wait()
            r = deliver(c, event)
            assert r.status_code == 200, r.text
            answers.append(r.json())

    threads = [threading.Thread(target=one) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(answers) == 50
    assert sum(not a["duplicate"] for a in answers) == 1
    work(api_env)
    with httpx.Client(base_url=api_url, timeout=10) as c:
        assert balance(c, read_key, acct) == 100
    with api_engine.connect() as conn:
        rows = conn.execute(select(T_PURCHASES.c.id).where(T_PURCHASES.c.account_id == acct)).all()
    assert len(rows) == 1


def _raw(http: httpx.Client, payload: str, header: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Stripe-Signature"] = header
    return http.post("/v1/webhooks/stripe", content=payload, headers=headers)


def test_bad_signatures_are_400_and_store_nothing(http: httpx.Client, api_engine: Engine) -> None:
    event = _purchase_event(api_engine, account("forged"))
    payload = json.dumps(event)
    now = int(time.time())
    good = sf.compute_v1(payload, STRIPE_WEBHOOK_SECRET, now)
    cases = {
        "stale": sf.sign(payload, STRIPE_WEBHOOK_SECRET, timestamp=now - 301),
        "tampered": sf.sign(payload.replace('"50"', '"5000"'), STRIPE_WEBHOOK_SECRET),
        "wrong secret": sf.sign(payload, "whsec_other"),
        "v0 only": sf.signature_header(now, v1=[], v0=[good]),
        "no timestamp": f"v1={good}",
        "missing": None,
    }
    for name, header in cases.items():
        r = _raw(http, payload, header)
        assert r.status_code == 400, (name, r.text)
        assert r.headers["content-type"] == "application/problem+json", name
        assert r.json()["type"] == "urn:creditmeter:problem:bad-signature", name
    assert stored(api_engine, event["id"]) is None

    # Two v1 signatures (a secret being rolled), one of them valid: accepted.
    two = sf.signature_header(now, v1=[sf.compute_v1(payload, "whsec_old", now), good])
    assert _raw(http, payload, two).status_code == 200
    assert stored(api_engine, event["id"]) is not None


def test_a_signed_body_that_is_not_an_event_is_400(http: httpx.Client) -> None:
    for body in ("{not json", "[1, 2]", json.dumps({"id": "nope", "type": "x"})):
        r = _raw(http, body, sf.sign(body, STRIPE_WEBHOOK_SECRET))
        assert r.status_code == 400, (body, r.text)
        assert r.json()["type"] == "urn:creditmeter:problem:bad-event"


def test_refund_before_completion_then_redeliveries_leave_the_refunded_share_taken_back(
    http: httpx.Client, api_env: dict[str, str], read_key: str, api_engine: Engine
) -> None:
    acct = account("order")
    buy = _purchase_event(api_engine, acct, credits=50, amount=500)
    session = buy["data"]["object"]
    refund = sf.refund(payment_intent=session["payment_intent"], charge="ch_o", amount=200)
    for e in (sf.event("refund.created", refund), buy):
        assert deliver(http, e).status_code == 200
    work(api_env)
    assert balance(http, read_key, acct) == 30
    for e in (buy, sf.event("refund.created", refund)):
        deliver(http, e)
    work(api_env)
    assert balance(http, read_key, acct) == 30


def test_an_event_that_cannot_be_applied_is_failed_in_status_and_changes_no_balance(
    http: httpx.Client,
    api_env: dict[str, str],
    admin_key: str,
    read_key: str,
    api_engine: Engine,
) -> None:
    def failed_events() -> int:
        r = http.get("/v1/status/sync", headers=bearer(admin_key))
        assert r.status_code == 200, r.text
        return int(r.json()["stripe_events_unapplied"].get("failed", 0))

    before = failed_events()
    acct = account("broken")
    event = _purchase_event(api_engine, acct)
    event["data"]["object"]["amount_total"] = 1  # not what the stored quote charges
    assert deliver(http, event).status_code == 200  # signed by Stripe: stored, then judged
    work(api_env)
    row = stored(api_engine, event["id"])
    assert row.status == "failed" and "nothing granted" in row.error
    assert failed_events() == before + 1
    assert balance(http, read_key, acct) == 0


# --- issue 12 item 9: bad deliveries and reused checkout keys are 4xx, never 5xx --------------


def _new_log_lines(log: Path, before: int) -> list[str]:
    time.sleep(0.2)  # the server writes its log line after answering
    return log.read_text(errors="replace").splitlines()[before:]


def test_a_body_that_is_not_utf8_is_400_with_one_log_line(
    http: httpx.Client, api_data_dir: Path
) -> None:
    log = api_data_dir / "api.log"
    before = len(log.read_text(errors="replace").splitlines())
    body = b'{"id": "evt_\xff\xfe"}'
    now = int(time.time())
    signed = hmac.new(STRIPE_WEBHOOK_SECRET.encode(), f"{now}.".encode() + body, hashlib.sha256)
    for header in (None, sf.signature_header(now, v1=[signed.hexdigest()])):
        headers = {"Content-Type": "application/json"}
        if header is not None:
            headers["Stripe-Signature"] = header
        r = http.post("/v1/webhooks/stripe", content=body, headers=headers)
        assert r.status_code == 400, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"] == "urn:creditmeter:problem:bad-event"
    lines = [line for line in _new_log_lines(log, before) if '"request_id"' not in line]
    assert len(lines) == 2 and all("not UTF-8" in line for line in lines), lines


def test_a_signed_event_nested_10000_levels_is_400(http: httpx.Client) -> None:
    body = '{"a": ' * 10_000 + "1" + "}" * 10_000
    r = _raw(http, body, sf.sign(body, STRIPE_WEBHOOK_SECRET))
    assert r.status_code == 400, r.text
    assert r.json()["type"] == "urn:creditmeter:problem:bad-event"


def test_checkout_with_a_reused_key_and_another_body_is_422_before_stripe(
    http: httpx.Client, meter_key: str, fake_stripe: sf.FakeStripe, api_env: dict[str, str]
) -> None:
    key = "checkout-" + uuid.uuid4().hex
    headers = {**bearer(meter_key), "Idempotency-Key": key}
    pack = {
        "account_id": account("reuse"),
        "pack_id": "credits-small",
        "success_url": "https://a.example/s",
        "cancel_url": "https://a.example/c",
    }
    custom = {**{k: v for k, v in pack.items() if k != "pack_id"}, "credit_type": "credits"}
    custom["credits"] = 1200
    first = http.post("/v1/checkout/sessions", json=pack, headers=headers)
    assert first.status_code == 201, first.text
    again = http.post("/v1/checkout/sessions", json=pack, headers=headers)
    assert again.status_code == 201 and again.json()["id"] == first.json()["id"]

    calls = len(fake_stripe.requests)
    other = http.post("/v1/checkout/sessions", json=custom, headers=headers)
    assert other.status_code == 422, other.text
    assert other.json()["type"] == "urn:creditmeter:problem:idempotency-key-reused"
    assert len(fake_stripe.requests) == calls  # refused before any call to Stripe

    # Our record gone (Redis lost it): Stripe's own idempotency_error is a 422 too, not a 502.
    client = redis.Redis.from_url(api_env["CREDITMETER_REDIS_URL"])
    try:
        keys = Keys(prefix=api_env["CREDITMETER_KEY_PREFIX"])
        assert client.delete(keys.http_idempotency(key)) == 1
    finally:
        client.close()
    by_stripe = http.post("/v1/checkout/sessions", json=custom, headers=headers)
    assert by_stripe.status_code == 422, by_stripe.text
    assert by_stripe.json()["type"] == "urn:creditmeter:problem:idempotency-key-reused"
    assert len(fake_stripe.requests) > calls  # this time Stripe was asked, and refused
