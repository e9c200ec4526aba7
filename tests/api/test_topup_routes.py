"""/v1/accounts/{id}/topup/{credit_type} over real HTTP, and an auto top-up end to end: a
rule set by an admin, a checkout that saves the card (the fake Stripe's), the signed
checkout webhook applied by a real `creditmeter worker`, then a crossing whose top-up job
that worker pays off-session and grants once, the payment_intent.succeeded webhook too."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select

from meter import Meter
from meter.keys import Keys
from meter.times import now_ms
from sync import accounts, thresholds, topup_attempts, topup_store
from sync.models import T_AUDIT, T_STRIPE_CUSTOMERS
from sync.pricing import PriceTable, Slab, replace_prices
from tests import stripe_fake as sf
from tests.api.conftest import STRIPE_WEBHOOK_SECRET, account, bearer, wait_until

PROBLEM = "application/problem+json"
UNIT_MINOR = 10  # 100 credits cost 1000 cents
FLUSHED_WITHIN_S = 30.0  # the worker flushes a grant to SQL within a few seconds
PAID_WITHIN_S = 30.0  # the worker picks the top-up job from the stripe queue


@pytest.fixture(scope="module")
def api_env(stripe_api_env: dict[str, str]) -> dict[str, str]:
    return stripe_api_env


@pytest.fixture(scope="module")
def credit_type(api_engine: Engine) -> str:
    ct = f"tu_{uuid.uuid4().hex[:10]}"
    table = PriceTable(ct, "usd", "graduated", 10, (Slab(1, None, UNIT_MINOR),))
    replace_prices(api_engine, [table])
    return ct


@pytest.fixture
def acct(http: httpx.Client, admin_key: str, api_engine: Engine, api_worker: None) -> str:
    """An account SQL knows (its first grant, flushed by the worker)."""
    a = account("topup")
    r = http.post(
        f"/v1/accounts/{a}/grants",
        json={"credit_type": "credits", "amount": 1, "category": "promotional"},
        headers={**bearer(admin_key), "Idempotency-Key": uuid.uuid4().hex},
    )
    assert r.status_code == 201, r.text
    wait_until(lambda: accounts.account_exists(api_engine, a), FLUSHED_WITHIN_S)
    return a


def _put(http: httpx.Client, key: str, a: str, ct: str, body: dict[str, Any]) -> httpx.Response:
    return http.put(f"/v1/accounts/{a}/topup/{ct}", json=body, headers=bearer(key))


def test_set_read_disable_and_set_again(
    http: httpx.Client,
    admin_key: str,
    read_key: str,
    acct: str,
    credit_type: str,
    api_engine: Engine,
) -> None:
    r = _put(http, admin_key, acct, credit_type, {"threshold": 50, "credits": 100, "daily_max": 2})
    assert r.status_code == 200, r.text
    rule = r.json()
    assert (rule["threshold"], rule["credits"], rule["daily_max"], rule["enabled"]) == (
        50,
        100,
        2,
        True,
    )
    assert (rule["card_saved"], rule["attempts"]) == (False, [])
    # The wallet's top-up threshold, which the charge scripts flag crossings of.
    assert thresholds.get_thresholds(api_engine, acct, "topup") == {credit_type: 50}
    got = http.get(f"/v1/accounts/{acct}/topup/{credit_type}", headers=bearer(read_key))
    assert got.status_code == 200 and got.json()["threshold"] == 50
    gone = http.delete(f"/v1/accounts/{acct}/topup/{credit_type}", headers=bearer(admin_key))
    assert gone.status_code == 204
    off = http.get(f"/v1/accounts/{acct}/topup/{credit_type}", headers=bearer(read_key)).json()
    assert (off["enabled"], off["disabled_reason"]) == (False, "disabled by an admin")
    assert thresholds.get_thresholds(api_engine, acct, "topup") == {}
    again = _put(http, admin_key, acct, credit_type, {"threshold": 10, "credits": 100})
    assert (again.json()["enabled"], again.json()["daily_max"]) == (True, 1)
    assert thresholds.get_thresholds(api_engine, acct, "topup") == {credit_type: 10}
    with api_engine.connect() as conn:
        actions = (
            conn.execute(
                select(T_AUDIT.c.action)
                .where(T_AUDIT.c.target == f"{acct}/{credit_type}")
                .order_by(T_AUDIT.c.id)
            )
            .scalars()
            .all()
        )
    assert actions == ["topup.set", "topup.disable", "topup.set"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"threshold": -1, "credits": 100}, "body.threshold"),
        ({"threshold": 0, "credits": 100}, "body.threshold"),
        ({"threshold": 5, "credits": 0}, "body.credits"),
        ({"threshold": 5, "credits": "100"}, "body.credits"),
        ({"threshold": 5, "credits": 100, "daily_max": 25}, "body.daily_max"),
        ({"threshold": 5, "credits": 100, "enabled": True}, "body.enabled"),
        ({"threshold": 5}, "body.credits"),
        ({"threshold": 5, "credits": 5}, "body.credits"),  # below the minimum purchase of 10
    ],
)
def test_bad_rules_are_422_problem_json(
    http: httpx.Client,
    admin_key: str,
    acct: str,
    credit_type: str,
    body: dict[str, Any],
    field: str,
) -> None:
    r = _put(http, admin_key, acct, credit_type, body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    assert field in [e["field"] for e in r.json()["errors"]]


def test_unknown_things_are_problems(
    http: httpx.Client, admin_key: str, meter_key: str, acct: str, credit_type: str
) -> None:
    body = {"threshold": 5, "credits": 100}
    unsold = _put(http, admin_key, acct, "never_sold", body)
    assert unsold.status_code == 422
    assert unsold.json()["errors"][0]["field"] == "path.credit_type"
    nobody = _put(http, admin_key, "nobody-" + uuid.uuid4().hex[:8], credit_type, body)
    assert (nobody.status_code, nobody.json()["type"].rsplit(":", 1)[-1]) == (
        404,
        "account-not-found",
    )
    assert (
        http.get(f"/v1/accounts/{acct}/topup/nothing", headers=bearer(admin_key)).status_code == 404
    )
    assert (
        http.delete(f"/v1/accounts/{acct}/topup/nothing", headers=bearer(admin_key)).status_code
        == 404
    )
    assert _put(http, meter_key, acct, credit_type, body).status_code == 403
    assert _put(http, admin_key, "bad id!", credit_type, body).status_code == 422


def _deliver(http: httpx.Client, event: dict[str, Any]) -> None:
    payload = json.dumps(event)
    r = http.post(
        "/v1/webhooks/stripe",
        content=payload,
        headers={
            "Stripe-Signature": sf.sign(payload, STRIPE_WEBHOOK_SECRET),
            "Content-Type": "application/json",
        },
    )
    assert r.status_code == 200, r.text


def _balance(http: httpx.Client, key: str, a: str, ct: str) -> int:
    r = http.get(f"/v1/accounts/{a}/balance", headers=bearer(key))
    rows = [b for b in r.json()["balances"] if b["credit_type"] == ct]
    return int(rows[0]["balance"]) if rows else 0


def test_a_crossing_is_topped_up_off_session_with_the_card_the_checkout_saved(
    http: httpx.Client,
    admin_key: str,
    meter_key: str,
    acct: str,
    credit_type: str,
    fake_stripe: sf.FakeStripe,
    api_engine: Engine,
    api_env: dict[str, str],
    api_prefix: str,
    tmp_path: Path,
) -> None:
    _put(http, admin_key, acct, credit_type, {"threshold": 50, "credits": 100, "daily_max": 1})
    checkout = {
        "account_id": acct,
        "credit_type": credit_type,
        "credits": 100,
        "success_url": "https://app.example/ok",
        "cancel_url": "https://app.example/cancel",
    }
    r = http.post("/v1/checkout/sessions", json=checkout, headers=bearer(meter_key))
    assert r.status_code == 201, r.text
    (sent,) = [
        c
        for c in fake_stripe.calls("POST", "/v1/checkout/sessions")
        if c.params["client_reference_id"] == acct
    ]
    assert sent.params["payment_intent_data"]["setup_future_usage"] == "off_session"
    # The customer pays: Stripe attaches the card to the customer, the webhook says so.
    with api_engine.connect() as conn:
        customer = conn.execute(
            select(T_STRIPE_CUSTOMERS.c.customer_id).where(T_STRIPE_CUSTOMERS.c.account_id == acct)
        ).scalar_one()
    pi = fake_stripe.add_payment_intent(
        customer=customer, amount=1000, setup_future_usage="off_session"
    )
    session = sf.checkout_session(
        id=r.json()["id"],
        account_id=acct,
        amount_total=1000,
        customer=customer,
        payment_intent=pi,
        metadata=sent.params["metadata"],
    )
    _deliver(http, sf.event("checkout.session.completed", session))
    wait_until(lambda: topup_store.saved_card(api_engine, acct) is not None, PAID_WITHIN_S)
    assert _balance(http, meter_key, acct, credit_type) == 100

    # A change that takes available below the threshold (100 -> 40): the worker's flush
    # claims the crossing's attempt, its job pays and grants.
    keys = Keys(prefix=api_prefix, buckets=int(api_env["CREDITMETER_BUCKETS"]))
    meter = Meter.from_url(api_env["CREDITMETER_REDIS_URL"], keys=keys)
    try:
        crossing = meter.adjust(acct, credit_type, -60, reason="usage").id
    finally:
        meter.redis.close()
    aid = topup_attempts.attempt_id(acct, credit_type, crossing)

    def settled() -> bool:
        found = topup_attempts.get_attempt(api_engine, aid)
        return found is not None and found.status == "succeeded"

    wait_until(settled, PAID_WITHIN_S)
    assert _balance(http, meter_key, acct, credit_type) == 140
    attempt = topup_attempts.get_attempt(api_engine, aid)
    assert attempt is not None and attempt.payment_intent_id is not None
    intent = [
        c
        for c in fake_stripe.calls("POST", "/v1/payment_intents")
        if c.params["metadata"]["topup_attempt_id"] == aid
    ]
    assert len(intent) == 1 and intent[0].params["payment_method"] == sf.CARD_SUCCEEDS
    # Stripe's webhook about that payment grants nothing more; nor does the same crossing.
    paid = http.get(f"/v1/accounts/{acct}/topup/{credit_type}", headers=bearer(admin_key)).json()
    assert [a["status"] for a in paid["attempts"]] == ["succeeded"]
    assert paid["card_saved"] is True
    obj = sf.example("payment_intent") | {
        "id": attempt.payment_intent_id,
        "amount": 1000,
        "currency": "usd",
        "status": "succeeded",
        "metadata": intent[0].params["metadata"],
    }
    event = sf.event("payment_intent.succeeded", obj)
    _deliver(http, event)
    wait_until(
        lambda: (
            http.get(f"/v1/accounts/{acct}/balance", headers=bearer(meter_key)).status_code == 200
            and _event_applied(api_engine, event["id"])
        ),
        PAID_WITHIN_S,
    )
    assert _balance(http, meter_key, acct, credit_type) == 140
    assert topup_attempts.claim(api_engine, acct, credit_type, crossing, now_ms())[0] is None


def _event_applied(engine: Engine, event_id: str) -> bool:
    from sync.purchases import event_status

    return event_status(engine, event_id) == "applied"


def test_the_account_page_shows_the_rule_and_its_last_attempts(
    http: httpx.Client, admin_key: str, acct: str, credit_type: str, api_engine: Engine
) -> None:
    from tests.api.test_admin_dashboard import login

    assert login(http, admin_key).status_code in (200, 303)
    before = http.get(f"/admin/accounts/{acct}")
    assert before.status_code == 200 and 'id="topup-rules"' not in before.text
    _put(http, admin_key, acct, credit_type, {"threshold": 50, "credits": 100, "daily_max": 3})
    aid, _ = topup_attempts.claim(api_engine, acct, credit_type, "x-page", now_ms())
    assert aid is not None
    topup_attempts.record_failure(
        api_engine,
        aid,
        code="card_declined",
        message="Your card was declined.",
        payment_intent_id="pi_page",
        now_ms=now_ms(),
    )
    html = http.get(f"/admin/accounts/{acct}").text
    assert 'id="topup-rules"' in html and f'data-credit-type="{credit_type}"' in html
    assert f'data-attempt="{aid}"' in html and "card_declined" in html and "pi_page" in html
    assert "No card saved yet" in html
