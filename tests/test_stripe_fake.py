"""The fake Stripe API and event builders, proved against the real stripe client."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import stripe

from tests.stripe_fake import (
    API_VERSION,
    CARD_DECLINED,
    CARD_NEEDS_AUTH,
    CARD_SUCCEEDS,
    FakeStripe,
    charge,
    checkout_session,
    compute_v1,
    event,
    example,
    invoice,
    parse_form,
    refund,
    sign,
    signature_header,
    subscription,
)

SECRET = "whsec_test_secret"
TOLERANCE_S = 300  # SPEC §9


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe() as server:
        yield server


@pytest.fixture
def client(fake: FakeStripe) -> stripe.StripeClient:
    return stripe.StripeClient(
        "sk_test_fake", base_addresses={"api": fake.url}, max_network_retries=0
    )


def session_params(credits: int = 50) -> dict:
    return {
        "mode": "payment",
        "client_reference_id": "acct-1",
        "metadata": {"credit_type": "api", "credits": str(credits)},
        "line_items": [
            {
                "price_data": {
                    "currency": "usd",
                    "unit_amount": 500,
                    "product_data": {"name": f"{credits} credits"},
                },
                "quantity": 2,
            }
        ],
        "success_url": "https://app.test/ok",
        "cancel_url": "https://app.test/cancel",
        "expand": ["line_items"],
    }


def test_parse_form_brackets() -> None:
    parsed = parse_form("a[b][0][c]=1&a[b][1][c]=2&expand[]=x&expand[]=y&m[k]=&n=3")
    assert parsed == {
        "a": {"b": [{"c": "1"}, {"c": "2"}]},
        "expand": ["x", "y"],
        "m": {"k": ""},
        "n": "3",
    }


def test_customer_and_session_are_recorded(fake: FakeStripe, client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create(
        params={"email": "a@example.com", "metadata": {"account_id": "acct-1"}}
    )
    assert customer.id.startswith("cus_") and customer.email == "a@example.com"
    assert customer.metadata.to_dict() == {"account_id": "acct-1"} and customer.livemode is False

    params = {**session_params(), "customer": customer.id}
    session = client.v1.checkout.sessions.create(
        params=params, options={"idempotency_key": "purchase-1"}
    )
    assert session.id.startswith("cs_test_") and session.object == "checkout.session"
    assert session.url == f"https://checkout.stripe.com/c/pay/{session.id}"
    assert (session.mode, session.status, session.payment_status) == ("payment", "open", "unpaid")
    assert (session.amount_total, session.currency, session.customer) == (1000, "usd", customer.id)
    assert session.client_reference_id == "acct-1" and session.payment_intent is None
    assert session.metadata.to_dict() == {"credit_type": "api", "credits": "50"}

    [recorded] = fake.calls("POST", "/v1/checkout/sessions")
    assert recorded.params["metadata"]["credits"] == "50"
    assert recorded.params["line_items"][0]["price_data"]["unit_amount"] == "500"
    assert recorded.params["expand"] == ["line_items"]
    assert recorded.headers["idempotency-key"] == "purchase-1"
    assert recorded.headers["authorization"] == "Bearer sk_test_fake"
    assert recorded.headers["stripe-version"] == API_VERSION
    # The client sends a key of its own on every POST.
    assert fake.calls("POST", "/v1/customers")[0].headers["idempotency-key"]


def test_a_plan_session_is_priced_by_a_price_the_account_has(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    price = fake.add_price(2000)
    customer = client.v1.customers.create(params={"metadata": {"account_id": "acct-1"}})
    plan = {
        "mode": "subscription",
        "customer": customer.id,
        "line_items": [{"price": price, "quantity": 1}],
        "subscription_data": {"metadata": {"plan_id": "pro"}},
    }
    session = client.v1.checkout.sessions.create(params=plan)
    assert (session.mode, session.amount_total, session.currency) == ("subscription", 2000, "usd")
    assert session.payment_intent is None and session.subscription is None

    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.checkout.sessions.create(
            params={**plan, "line_items": [{"price": "price_pro", "quantity": 1}]}
        )
    assert (unknown.value.code, unknown.value.param) == ("resource_missing", "line_items[0][price]")
    one_time = fake.add_price(2000, recurring=False)
    with pytest.raises(stripe.InvalidRequestError, match="recurring price"):
        client.v1.checkout.sessions.create(
            params={**plan, "line_items": [{"price": one_time, "quantity": 1}]}
        )
    with pytest.raises(stripe.InvalidRequestError, match="payment` mode but passed a recurring"):
        client.v1.checkout.sessions.create(
            params={"mode": "payment", "line_items": [{"price": price, "quantity": 1}]}
        )


def refused(client: stripe.StripeClient, params: dict) -> stripe.InvalidRequestError:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.checkout.sessions.create(params=params)
    assert caught.value.http_status == 400
    return caught.value


def test_session_requests_stripe_would_refuse_are_refused_with_its_error(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    good = session_params()
    item = good["line_items"][0]
    price_data = item["price_data"]

    def with_item(**changes: object) -> dict:
        return {**good, "line_items": [{**item, **changes}]}

    def with_price(**changes: object) -> dict:
        return with_item(price_data={**price_data, **changes})

    unknown = refused(client, {**good, "credits": 50})
    assert (unknown.code, unknown.param) == ("parameter_unknown", "credits")
    assert str(unknown.user_message) == "Received unknown parameter: credits"
    nested = refused(client, with_price(amount=500))
    assert nested.param == "line_items[0][price_data][amount]"
    no_currency = refused(client, with_price(currency=None))
    assert (no_currency.code, no_currency.param) == (
        "parameter_missing",
        "line_items[0][price_data][currency]",
    )
    no_name = refused(client, with_price(product_data={"description": "credits"}))
    assert no_name.param == "line_items[0][price_data][product_data][name]"
    not_integer = refused(client, with_price(unit_amount="5.5"))
    assert (not_integer.code, str(not_integer.user_message)) == (
        "parameter_invalid_integer",
        "Invalid integer: 5.5",
    )
    assert refused(client, {**good, "mode": "rent"}).param == "mode"
    assert refused(client, with_item(quantity=None)).param == "line_items[0][quantity]"
    both = refused(client, with_item(price="price_x"))
    assert both.code == "parameters_exclusive"
    long_value = refused(client, {**good, "metadata": {"quote": "x" * 501}})
    assert long_value.param == "metadata[quote]"
    assert refused(client, {**good, "subscription_data": {"metadata": {"a": "b"}}}).param == (
        "subscription_data"
    )

    small = refused(client, with_price(unit_amount=24))  # 2 x 24 cents: below $0.50
    assert (small.code, small.param) == ("amount_too_small", "line_items")
    large = refused(client, with_price(unit_amount=50_000_000))
    assert large.code == "amount_too_large"
    gone = refused(client, {**good, "customer": "cus_never"})
    assert (gone.code, gone.param) == ("resource_missing", "customer")
    assert not fake.calls("POST", "/v1/customers")


def test_a_deleted_customer_is_missing_for_new_sessions(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    customer = client.v1.customers.create(params={"metadata": {"account_id": "acct-1"}})
    assert client.v1.customers.retrieve(customer.id).id == customer.id
    deleted = client.v1.customers.delete(customer.id)
    assert deleted.deleted is True
    missing = refused(client, {**session_params(), "customer": customer.id})
    assert (missing.code, missing.param) == ("resource_missing", "customer")
    with pytest.raises(stripe.InvalidRequestError) as never:
        client.v1.customers.retrieve("cus_never")
    assert never.value.http_status == 404


def test_event_list_parameters_are_checked(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as bad:
        client.v1.events.list(params={"created": {"gte": "yesterday"}})  # type: ignore[typeddict-item]
    assert bad.value.param == "created[gte]"
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.events.list(params={"since": 1})  # type: ignore[typeddict-unknown-key]
    assert unknown.value.code == "parameter_unknown"


def test_answers_have_the_shape_of_stripe_examples(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    customer = client.v1.customers.create(params={"metadata": {"account_id": "acct-1"}})
    session = client.v1.checkout.sessions.create(
        params={**session_params(), "customer": customer.id}
    )
    for answer, resource in ((customer, "customer"), (session, "checkout.session")):
        assert set(answer.to_dict()) == set(example(resource)), resource


def test_idempotency_replays_and_rejects_other_params(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    options: stripe.RequestOptions = {"idempotency_key": "purchase-2"}
    first = client.v1.checkout.sessions.create(params=session_params(), options=options)
    again = client.v1.checkout.sessions.create(params=session_params(), options=options)
    assert again.id == first.id
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.last_response.headers

    with pytest.raises(stripe.IdempotencyError):
        client.v1.checkout.sessions.create(params=session_params(credits=100), options=options)
    assert len(fake.calls("POST", "/v1/checkout/sessions")) == 3


def test_events_paging_and_filters(fake: FakeStripe, client: stripe.StripeClient) -> None:
    start = 1_700_000_000
    added = [
        event("invoice.paid" if i % 2 else "charge.refunded", {}, created=start + i)
        for i in range(25)
    ]
    for e in added:
        fake.add_event(e)

    listed = list(client.v1.events.list(params={"limit": 10}).auto_paging_iter())
    assert [e.id for e in listed] == [e["id"] for e in reversed(added)]
    pages = fake.calls("GET", "/v1/events")
    assert len(pages) == 3 and pages[1].query["starting_after"] == added[15]["id"]

    recent = client.v1.events.list(params={"created": {"gte": start + 20}, "limit": 3})
    assert [e.created for e in recent.data] == [start + 24, start + 23, start + 22]
    assert recent.has_more is True and recent.url == "/v1/events"
    after = client.v1.events.list(params={"created": {"gt": start + 20}, "type": "invoice.*"})
    assert [e.created for e in after.auto_paging_iter()] == [start + 23, start + 21]

    found = client.v1.events.retrieve(added[3]["id"])
    assert found.type == "invoice.paid" and found.api_version == API_VERSION
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.events.retrieve("evt_missing")
    assert missing.value.code == "resource_missing" and missing.value.http_status == 404


def test_failure_switch_is_not_stored_for_the_key(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    options: stripe.RequestOptions = {"idempotency_key": "purchase-3"}
    fake.fail_with(500)
    with pytest.raises(stripe.APIError):
        client.v1.checkout.sessions.create(params=session_params(), options=options)
    fake.fail_with(None)
    session = client.v1.checkout.sessions.create(params=session_params(), options=options)
    assert "Idempotent-Replayed" not in session.last_response.headers
    assert len(fake.calls("POST", "/v1/checkout/sessions")) == 2


def test_stopped_refuses_connections(fake: FakeStripe, client: stripe.StripeClient) -> None:
    fake.stop()
    with pytest.raises(stripe.APIConnectionError):
        client.v1.customers.create(params={"email": "a@example.com"})


def test_auth_and_unknown_paths(fake: FakeStripe, client: stripe.StripeClient) -> None:
    publishable = stripe.StripeClient(
        "pk_test_fake", base_addresses={"api": fake.url}, max_network_retries=0
    )
    with pytest.raises(stripe.AuthenticationError):
        publishable.v1.customers.create(params={})
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.payment_intents.retrieve("pi_123")
    assert unknown.value.http_status == 404


def test_signed_events_verify(client: stripe.StripeClient) -> None:
    payload = json.dumps(event("checkout.session.completed", {"id": "cs_test_1"}))
    now = int(time.time())
    header = sign(payload, SECRET, timestamp=now)
    assert header == signature_header(now, [compute_v1(payload, SECRET, now)])
    assert stripe.WebhookSignature.verify_header(payload, header, SECRET, tolerance=TOLERANCE_S)
    assert client.construct_event(payload, sign(payload, SECRET), SECRET).id

    rolled = signature_header(now, ["0" * 64, compute_v1(payload, SECRET, now)])
    assert stripe.WebhookSignature.verify_header(payload, rolled, SECRET, tolerance=TOLERANCE_S)
    for bad in (
        signature_header(now, [], v0=[compute_v1(payload, SECRET, now)]),
        sign(payload, SECRET, timestamp=now - TOLERANCE_S - 1),
        sign(payload, "whsec_other"),
    ):
        with pytest.raises(stripe.SignatureVerificationError):
            stripe.WebhookSignature.verify_header(payload, bad, SECRET, tolerance=TOLERANCE_S)


def test_builders_have_current_api_shapes(fake: FakeStripe, client: stripe.StripeClient) -> None:
    inv = invoice(
        customer="cus_1",
        subscription="sub_1",
        price_id="price_pro",
        period_start=1_700_000_000,
        period_end=1_702_592_000,
        amount_paid=2000,
    )
    assert "subscription" not in inv
    assert inv["parent"]["subscription_details"]["subscription"] == "sub_1"
    line = inv["lines"]["data"][0]
    assert line["period"] == {"start": 1_700_000_000, "end": 1_702_592_000}
    assert line["pricing"]["price_details"]["price"] == "price_pro"

    sub = subscription(
        customer="cus_1", price_id="price_pro", current_period_start=1, current_period_end=2
    )
    assert "current_period_start" not in sub
    assert sub["items"]["data"][0]["price"]["id"] == "price_pro"
    assert sub["items"]["data"][0]["current_period_end"] == 2

    re_ = refund(payment_intent="pi_1", charge="ch_1", amount=300)
    ch = charge(payment_intent="pi_1", amount=1000, amount_refunded=300, refunds=[re_])
    assert ch["refunded"] is False and ch["refunds"]["data"] == [re_]
    assert charge(payment_intent="pi_1", amount=10, amount_refunded=10)["refunded"] is True

    paid = checkout_session(account_id="acct-1", amount_total=1000, metadata={"credits": "50"})
    assert paid["payment_intent"].startswith("pi_") and paid["subscription"] is None
    plan = checkout_session(
        account_id="acct-1", mode="subscription", amount_total=2000, metadata={}
    )
    assert plan["payment_intent"] is None and plan["subscription"].startswith("sub_")

    # Every shape survives the real client's deserialisation.
    for obj in (inv, sub, ch, paid):
        fake.add_event(event(f"{obj['object']}.test", obj))
    for listed in client.v1.events.list().auto_paging_iter():
        assert listed.data.object.id


# --- payment intents (auto top-up) -----------------------------------------------------------


def intent_params(customer: str, card: str = CARD_SUCCEEDS) -> dict:
    return {
        "amount": 1000,
        "currency": "usd",
        "customer": customer,
        "payment_method": card,
        "off_session": True,
        "confirm": True,
        "metadata": {"topup_attempt_id": "topup_1"},
    }


def test_an_off_session_payment_on_each_test_card(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    customer = client.v1.customers.create(params={}).id
    paid = client.v1.payment_intents.create(params=intent_params(customer))
    assert (paid.status, paid.amount_received, paid.payment_method) == (
        "succeeded",
        1000,
        CARD_SUCCEEDS,
    )
    assert set(paid.to_dict()) == set(example("payment_intent"))
    assert client.v1.payment_intents.retrieve(paid.id).id == paid.id
    for card, code in (
        (CARD_DECLINED, "card_declined"),
        (CARD_NEEDS_AUTH, "authentication_required"),
    ):
        with pytest.raises(stripe.CardError) as failed:
            client.v1.payment_intents.create(params=intent_params(customer, card))
        assert (failed.value.http_status, failed.value.code) == (402, code)
        kept = failed.value.error.payment_intent  # type: ignore[union-attr]
        assert kept.status == "requires_payment_method"
        assert kept.last_payment_error.code == code
        assert client.v1.payment_intents.retrieve(kept.id).status == "requires_payment_method"
    # On session (the customer present), the 3D Secure card asks for the customer's action.
    on_session = {**intent_params(customer, CARD_NEEDS_AUTH), "off_session": False}
    assert client.v1.payment_intents.create(params=on_session).status == "requires_action"


def test_payment_intent_requests_stripe_would_refuse(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    customer = client.v1.customers.create(params={}).id
    good = intent_params(customer)

    def refused_intent(params: dict) -> stripe.InvalidRequestError:
        with pytest.raises(stripe.InvalidRequestError) as exc:
            client.v1.payment_intents.create(params=params)  # type: ignore[arg-type]
        return exc.value

    assert refused_intent({k: v for k, v in good.items() if k != "amount"}).param == "amount"
    assert refused_intent({**good, "off_session": "sometimes"}).param == "off_session"
    assert refused_intent({**good, "confirm": False}).param == "off_session"
    assert refused_intent({**good, "payment_method": "pm_never"}).code == "resource_missing"
    assert refused_intent({**good, "customer": "cus_never"}).param == "customer"
    assert refused_intent({**good, "amount": 49}).code == "amount_too_small"
    assert refused_intent({**good, "credits": 1}).code == "parameter_unknown"
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.payment_intents.retrieve("pi_never")
    assert missing.value.http_status == 404


def test_a_card_error_is_kept_for_its_idempotency_key(
    fake: FakeStripe, client: stripe.StripeClient
) -> None:
    """Stripe keeps the result of a request that ran, a decline too: the retry is answered
    the same decline, with no second charge."""
    customer = client.v1.customers.create(params={}).id
    options: stripe.RequestOptions = {"idempotency_key": "topup-declined"}
    params = intent_params(customer, CARD_DECLINED)
    errors = []
    for _ in range(2):
        with pytest.raises(stripe.CardError) as failed:
            client.v1.payment_intents.create(params=params, options=options)  # type: ignore[arg-type]
        errors.append(failed.value.error.payment_intent.id)  # type: ignore[union-attr]
    assert errors[0] == errors[1]
