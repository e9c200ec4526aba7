"""A loopback fake of the Stripe API and builders of Stripe events, so the purchase tests
(SPEC §9) drive the real `stripe` client and signed webhooks without touching the network.

    with FakeStripe() as fake:
        client = stripe.StripeClient(
            "sk_test_fake", base_addresses={"api": fake.url}, max_network_retries=0
        )
        fake.add_event(event("invoice.paid", invoice(...)))

FakeStripe serves customers, prices (`add_price`), Checkout Sessions, payment intents
(`add_payment_intent` for one a checkout made; created ones charge Stripe's test payment
methods, TEST_CARDS) and events, records
every request, replays idempotent POSTs as Stripe does, and fails on demand (`fail_with`,
`stop`). It is strict: a request the real API would refuse (unknown or missing parameters,
wrong types, tests/stripe_params.py; an unknown customer or price, an amount outside
Stripe's limits, a parameter of the other mode) is refused with Stripe's error body. Its
answers start from Stripe's published example objects (tests/stripe_objects/, `example`).
The event builders return plain dicts in the shape of the API version the client pins.
"""

from __future__ import annotations

import enum
import fnmatch
import hashlib
import hmac
import json
import operator
import re
import secrets
import string
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import stripe

from tests import stripe_params
from tests.stripe_params import OBJECTS_DIR, ParamError

JSON = dict[str, Any]

API_VERSION: str = stripe.api_version  # the version stripe 16.1.0 sends and expects
EVENTS_LIMIT_DEFAULT = 10  # Stripe's default page size for list endpoints
EVENTS_LIMIT_MAX = 100  # Stripe rejects larger pages
SESSION_TTL_S = 24 * 3600  # a Checkout Session expires 24 h after creation by default
DISPUTE_EVIDENCE_S = 7 * 24 * 3600  # time given to answer a dispute
SERVE_POLL_S = 0.02  # stop() waits up to this for the serving loop (the default is 0.5 s)
ID_CHARS = string.ascii_letters + string.digits
CREATED_OPS = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}
# Stripe's minimum charge per currency in minor units (docs.stripe.com/currencies), kept
# apart from sync/pricing.py on purpose: the fake does not take the code's word for it.
CHARGE_MINOR_MIN = {"usd": 50, "eur": 50, "gbp": 30, "jpy": 50, "huf": 17500, "mxn": 1000}
AMOUNT_MINOR_MAX = 99_999_999  # Stripe takes amounts of up to eight digits
# Stripe's test payment methods (docs.stripe.com/testing) and what confirming one does.
CARD_SUCCEEDS = "pm_card_visa"
CARD_DECLINED = "pm_card_chargeDeclined"  # declines every charge: card_declined
CARD_NEEDS_AUTH = "pm_card_authenticationRequired"  # 3D Secure on every payment
TEST_CARDS = (CARD_SUCCEEDS, CARD_DECLINED, CARD_NEEDS_AUTH)


def example(resource: str) -> JSON:
    """A fresh copy of Stripe's published example object of `resource` ("checkout.session"),
    from stripe/openapi's fixtures3.json (tests/stripe_objects/README.md)."""
    return dict(json.loads((OBJECTS_DIR / f"{resource}.json").read_text()))


def new_id(prefix: str) -> str:
    """A random Stripe-like id: `new_id("cus")` -> "cus_Q3x...", 24 characters after the prefix."""
    return f"{prefix}_{''.join(secrets.choice(ID_CHARS) for _ in range(24))}"


def _now() -> int:
    return int(time.time())


def parse_form(encoded: str) -> JSON:
    """Stripe's bracket notation back into nested dicts and lists (values stay strings):
    `a[b][0][c]=1&expand[]=x&expand[]=y` -> {"a": {"b": [{"c": "1"}]}, "expand": ["x", "y"]}."""
    root: JSON = {}
    for key, value in parse_qsl(encoded, keep_blank_values=True):
        head, _, rest = key.partition("[")
        parts = [head, *re.findall(r"\[([^\]]*)\]", "[" + rest)] if rest else [head]
        node = root
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        # "[]" appends: number it like the indexed form, turned into a list below.
        node[parts[-1] or str(len(node))] = value
    return _listify(root)


def _listify(node: Any) -> Any:
    """Dicts keyed exactly "0".."n-1" become lists, recursively."""
    if not isinstance(node, dict):
        return node
    items = {k: _listify(v) for k, v in node.items()}
    indices = [str(i) for i in range(len(items))]
    return [items[i] for i in indices] if items and set(items) == set(indices) else items


@dataclass(frozen=True)
class RecordedRequest:
    method: str  # upper case, "POST"
    path: str  # without the query string, "/v1/events"
    query: JSON  # parsed like the form body: {"created": {"gte": "1700000000"}}
    params: JSON  # the parsed form body
    headers: dict[str, str]  # lower-cased names: "idempotency-key", "stripe-version"


@dataclass(frozen=True)
class _Reply:
    status: int
    body: JSON
    headers: dict[str, str] = field(default_factory=dict)


def _error(status: int, type_: str, message: str, **extra: str) -> _Reply:
    return _Reply(status, {"error": {"type": type_, "message": message, **extra}})


class FakeStripe:
    """The Stripe API on 127.0.0.1 (free port), served from a daemon thread from
    construction until `stop()` or the end of the `with` block."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._events: list[JSON] = []
        self._customers: dict[str, JSON] = {}  # by id; a deleted one is Stripe's stub
        self._prices: dict[str, JSON] = {}
        self._payment_intents: dict[str, JSON] = {}
        self._idempotent: dict[str, tuple[tuple[str, str, JSON], _Reply]] = {}
        self._failure_status: int | None = None
        self._lock = threading.Lock()  # handler threads share all of the state above
        self._server = _Server(self)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        serving = threading.Thread(target=self._server.serve_forever, args=(SERVE_POLL_S,))
        serving.daemon = True
        serving.start()

    def __enter__(self) -> FakeStripe:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Close the port: later calls fail with connection refused. Safe to call twice."""
        self._server.shutdown()
        self._server.server_close()

    def fail_with(self, status: int | None) -> None:
        """Answer every call with `status` and a Stripe error body (None: back to normal).
        The failure is in front of the API, so nothing is stored for its idempotency key."""
        assert status is None or status >= 400
        self._failure_status = status

    def add_price(
        self,
        unit_amount: int,
        *,
        id: str | None = None,
        currency: str = "usd",
        recurring: bool = True,
    ) -> str:
        """A price the account has (a plan's is recurring, monthly); returns its id."""
        price = example("price")
        price.update(
            id=id or new_id("price"),
            created=_now(),
            currency=currency,
            unit_amount=unit_amount,
            unit_amount_decimal=str(unit_amount),
            product=new_id("prod"),
            transform_quantity=None,
        )
        if not recurring:
            price.update(recurring=None, type="one_time")
        with self._lock:
            self._prices[price["id"]] = price
        return str(price["id"])

    def add_payment_intent(
        self,
        *,
        customer: str,
        amount: int,
        payment_method: str = CARD_SUCCEEDS,
        currency: str = "usd",
        setup_future_usage: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> str:
        """A succeeded payment intent, as a paid Checkout Session leaves one; returns its id."""
        intent = _payment_intent(
            {
                "amount": str(amount),
                "currency": currency,
                "customer": customer,
                "payment_method": payment_method,
                "metadata": metadata or {},
                **({"setup_future_usage": setup_future_usage} if setup_future_usage else {}),
            },
            "succeeded",
        )
        with self._lock:
            self._payment_intents[intent["id"]] = intent
        return str(intent["id"])

    def add_event(self, event: JSON) -> None:
        assert event["object"] == "event" and event["id"] and isinstance(event["created"], int)
        with self._lock:
            self._events.append(event)

    def calls(self, method: str, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == method.upper() and r.path == path]

    def _respond(self, request: RecordedRequest) -> _Reply:
        with self._lock:
            self.requests.append(request)
            if self._failure_status is not None:
                status = self._failure_status
                type_ = "api_error" if status >= 500 else "invalid_request_error"
                return _error(status, type_, f"Injected failure (HTTP {status}).")
            if not request.headers.get("authorization", "").startswith("Bearer sk_"):
                return _error(401, "invalid_request_error", "You did not provide an API key.")
            key = request.headers.get("idempotency-key")
            if request.method != "POST" or not key:
                return self._route(request)
            return self._idempotent_reply(key, request)

    def _idempotent_reply(self, key: str, request: RecordedRequest) -> _Reply:
        """Stripe keeps the first result of a key and replays it for the same request;
        results of requests that failed validation are not kept."""
        fingerprint = (request.method, request.path, request.params)
        if key not in self._idempotent:
            reply = self._route(request)
            # A card error (402) happened while executing: Stripe keeps it like a success.
            if reply.status < 400 or reply.status == 402:
                self._idempotent[key] = (fingerprint, reply)
            return reply
        first_fingerprint, reply = self._idempotent[key]
        if first_fingerprint != fingerprint:
            return _error(
                400,
                "idempotency_error",
                "Keys for idempotent requests can only be used with the same parameters they"
                f" were first used with. Try using a key other than '{key}' if you meant to"
                " execute a different request.",
            )
        return _Reply(reply.status, reply.body, {"Idempotent-Replayed": "true"})

    def _route(self, request: RecordedRequest) -> _Reply:
        parts = request.path.strip("/").split("/")
        endpoint = _endpoint(request.method, parts)
        if endpoint is None:
            return _error(
                404,
                "invalid_request_error",
                f"Unrecognized request URL ({request.method}: {request.path}).",
            )
        try:
            if request.method == "GET":
                stripe_params.check(endpoint, request.query)
            stripe_params.check(endpoint, request.params)
            return self._serve(request, parts)
        except ParamError as exc:
            extra = {"param": exc.param, **({"code": exc.code} if exc.code else {})}
            return _error(exc.status, "invalid_request_error", exc.message, **extra)

    def _serve(self, request: RecordedRequest, parts: list[str]) -> _Reply:
        match request.method, parts:
            case "POST", ["v1", "customers"]:
                customer = _customer(request.params)
                self._customers[customer["id"]] = customer
                return _Reply(200, customer)
            case "GET", ["v1", "customers", customer_id]:
                return _Reply(200, self._customer_of(customer_id))
            case "DELETE", ["v1", "customers", customer_id]:
                self._customer_of(customer_id)
                gone = example("deleted_customer")
                gone["id"] = customer_id
                self._customers[customer_id] = gone
                return _Reply(200, gone)
            case "POST", ["v1", "checkout", "sessions"]:
                return _Reply(200, self._open_checkout_session(request.params))
            case "POST", ["v1", "payment_intents"]:
                return self._confirm_payment_intent(request.params)
            case "GET", ["v1", "payment_intents", intent_id]:
                if intent_id not in self._payment_intents:
                    raise _missing("payment_intent", intent_id, "intent", 404)
                return _Reply(200, self._payment_intents[intent_id])
            case "GET", ["v1", "events"]:
                return self._list_events(request.query)
            case "GET", ["v1", "events", event_id]:
                found = [e for e in self._events if e["id"] == event_id]
                if found:
                    return _Reply(200, found[0])
                raise _missing("event", event_id, "id", 404)
        raise AssertionError(f"no route for {request.method} {request.path}")

    def _customer_of(self, customer_id: str) -> JSON:
        if customer_id not in self._customers:
            raise _missing("customer", customer_id, "id", 404)
        return self._customers[customer_id]

    def _open_checkout_session(self, params: JSON) -> JSON:
        """A new hosted session, after the checks Stripe makes beyond parameter types."""
        mode = params.get("mode", "payment")
        customer = params.get("customer")
        if customer is not None and self._customers.get(customer, {"deleted": True}).get("deleted"):
            raise _missing("customer", customer, "customer")
        for other, only in (
            ("payment_intent_data", "payment"),
            ("subscription_data", "subscription"),
        ):
            if other in params and mode != only:
                raise ParamError(
                    f"You can only pass `{other}` in `{only}` mode.", other, "parameter_unknown"
                )
        line_items = params.get("line_items") or []
        if mode in ("payment", "subscription") and not line_items:
            raise ParamError(
                "Missing required param: line_items.", "line_items", "parameter_missing"
            )
        currencies, amount_total = set(), 0
        for i, item in enumerate(line_items):
            price = self._line_price(item, f"line_items[{i}]", mode)
            currencies.add(price["currency"])
            amount_total += int(price["unit_amount"]) * int(item["quantity"])
        currency = currencies.pop() if len(currencies) == 1 else None
        if currencies:
            raise ParamError(
                "All line items must have the same currency.", "line_items", "parameter_invalid"
            )
        if line_items:
            _check_amount(amount_total, str(currency))
        return _session(params, mode, amount_total if line_items else None, currency)

    def _confirm_payment_intent(self, params: JSON) -> _Reply:
        """A payment intent created and confirmed at once on a test card, after the checks
        Stripe makes beyond parameter types; a card error is a 402 whose body carries the
        payment intent, left requiring a new payment method."""
        customer = params.get("customer")
        if customer is not None and self._customers.get(customer, {"deleted": True}).get("deleted"):
            raise _missing("customer", customer, "customer")
        method = params.get("payment_method")
        if method is not None and method not in TEST_CARDS:
            raise _missing("payment_method", method, "payment_method")
        confirm = params.get("confirm") == "true"
        if params.get("off_session") not in (None, "false") and not confirm:
            raise ParamError(
                "You may only specify `off_session` when confirming a PaymentIntent.",
                "off_session",
            )
        if confirm and method is None:
            raise ParamError(
                "You cannot confirm this PaymentIntent because it's missing a payment method.",
                "payment_method",
                "payment_intent_unexpected_state",
            )
        _check_amount(int(params["amount"]), params["currency"], "amount")
        off_session = params.get("off_session") not in (None, "false")
        if not confirm:
            status = "requires_confirmation" if method else "requires_payment_method"
        elif method == CARD_DECLINED:
            return self._card_error(params, "card_declined", "Your card was declined.")
        elif method == CARD_NEEDS_AUTH and off_session:
            return self._card_error(
                params,
                "authentication_required",
                "Your card was declined. This transaction requires authentication.",
            )
        else:
            status = "requires_action" if method == CARD_NEEDS_AUTH else "succeeded"
        intent = _payment_intent(params, status)
        self._payment_intents[intent["id"]] = intent
        return _Reply(200, intent)

    def _card_error(self, params: JSON, code: str, message: str) -> _Reply:
        intent = _payment_intent(params, "requires_payment_method")
        charge_id = new_id("ch")
        intent["last_payment_error"] = {
            "type": "card_error",
            "code": code,
            "decline_code": "generic_decline" if code == "card_declined" else code,
            "message": message,
            "charge": charge_id,
        }
        self._payment_intents[intent["id"]] = intent
        error = {**intent["last_payment_error"], "payment_intent": intent}
        error["doc_url"] = f"https://docs.stripe.com/error-codes/{code.replace('_', '-')}"
        return _Reply(402, {"error": error})

    def _line_price(self, item: JSON, param: str, mode: str) -> JSON:
        """The price of one line item: a price id the account has, or inline price_data."""
        if ("price" in item) == ("price_data" in item):
            raise ParamError(
                "You must specify exactly one of these parameters: price, price_data.",
                param,
                "parameters_exclusive" if "price" in item else "parameter_missing",
            )
        if "quantity" not in item:
            raise ParamError(
                f"Missing required param: {param}[quantity].",
                f"{param}[quantity]",
                "parameter_missing",
            )
        if "price" in item:
            price = self._prices.get(item["price"])
            if price is None:
                raise _missing("price", item["price"], f"{param}[price]")
            recurring = price["recurring"] is not None
        else:
            data = item["price_data"]
            if ("product" in data) == ("product_data" in data):
                raise ParamError(
                    "You must specify exactly one of these parameters: product, product_data.",
                    f"{param}[price_data]",
                )
            if "unit_amount" not in data:
                raise ParamError(
                    f"Missing required param: {param}[price_data][unit_amount].",
                    f"{param}[price_data][unit_amount]",
                    "parameter_missing",
                )
            price = {"currency": data["currency"], "unit_amount": data["unit_amount"]}
            recurring = "recurring" in data
        if mode == "payment" and recurring:
            raise ParamError(
                "You specified `payment` mode but passed a recurring price. Either switch to"
                " `subscription` mode or use only one-time prices.",
                param,
            )
        if mode == "subscription" and not recurring:
            raise ParamError(
                "You must provide at least one recurring price in `subscription` mode when"
                " using prices.",
                param,
            )
        return price

    def _list_events(self, query: JSON) -> _Reply:
        limit = int(query.get("limit", EVENTS_LIMIT_DEFAULT))
        if not 1 <= limit <= EVENTS_LIMIT_MAX:
            return _error(400, "invalid_request_error", "Invalid limit.", param="limit")
        # Newest first; of events created in the same second, the one added last first.
        ordered = sorted(reversed(self._events), key=lambda e: e["created"], reverse=True)
        if "starting_after" in query:
            ids = [e["id"] for e in ordered]
            if query["starting_after"] not in ids:
                return _error(
                    400, "invalid_request_error", "No such event.", param="starting_after"
                )
            ordered = ordered[ids.index(query["starting_after"]) + 1 :]
        created = query.get("created", {})
        if not isinstance(created, dict):  # created=<ts> means exactly that second
            created = {"gte": created, "lte": created}
        matches = [
            e
            for e in ordered
            if all(CREATED_OPS[op](e["created"], int(ts)) for op, ts in created.items())
            and fnmatch.fnmatchcase(e["type"], query.get("type", "*"))
        ]
        return _Reply(
            200,
            {
                "object": "list",
                "data": matches[:limit],
                "has_more": len(matches) > limit,
                "url": "/v1/events",
            },
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client must not keep the test process alive

    def __init__(self, fake: FakeStripe) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        headers = {name.lower(): value for name, value in self.headers.items()}
        request = RecordedRequest(
            self.command, url.path, parse_form(url.query), parse_form(body), headers
        )
        reply = self.server.fake._respond(request)
        payload = json.dumps(reply.body).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Request-Id", new_id("req"))
        self.send_header("Stripe-Version", headers.get("stripe-version", API_VERSION))
        if "idempotency-key" in headers:
            self.send_header("Idempotency-Key", headers["idempotency-key"])
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    do_POST = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: tests read `FakeStripe.requests`, not a log line per call."""


def _endpoint(method: str, parts: list[str]) -> str | None:
    """The rules' name of a request ("GET /v1/customers/{id}"), None for a URL not served."""
    match method, parts:
        case "POST", ["v1", "customers"] | ["v1", "checkout", "sessions"]:
            return f"POST /{'/'.join(parts)}"
        case "POST", ["v1", "payment_intents"]:
            return "POST /v1/payment_intents"
        case "GET", ["v1", "events"]:
            return "GET /v1/events"
        case (("GET" | "DELETE"), ["v1", ("customers" | "events") as kind, _]):
            return f"{method} /v1/{kind}/{{id}}"
        case "GET", ["v1", "payment_intents", _]:
            return "GET /v1/payment_intents/{id}"
    return None


def _missing(resource: str, id: str, param: str, status: int = 400) -> ParamError:
    """Stripe's resource_missing: 404 for the object of the URL, 400 for one a parameter
    names (a deleted customer, or one made with the other mode's key)."""
    return ParamError(f"No such {resource}: '{id}'", param, "resource_missing", status)


def _check_amount(amount: int, currency: str, param: str = "line_items") -> None:
    """Stripe's limits; a Checkout Session's total (`line_items`) or a payment's `amount`."""
    what = "The Checkout Session's total amount due" if param == "line_items" else "Amount"
    low = CHARGE_MINOR_MIN.get(currency, 1)
    if amount < low:
        raise ParamError(
            f"{what} must add up to at least {low} {currency} (in the currency's smallest unit).",
            param,
            "amount_too_small",
        )
    if amount > AMOUNT_MINOR_MAX:
        raise ParamError(
            f"{what} must be no more than {AMOUNT_MINOR_MAX} {currency} (in the currency's"
            " smallest unit).",
            param,
            "amount_too_large",
        )


def _customer(params: JSON) -> JSON:
    customer = example("customer")
    customer.update(
        id=new_id("cus"),
        created=_now(),
        currency=None,
        discount=None,
        description=params.get("description"),
        email=params.get("email"),
        invoice_prefix=secrets.token_hex(4).upper(),
        metadata=params.get("metadata") or {},
        name=params.get("name"),
        phone=params.get("phone"),
        shipping=None,
    )
    return customer


def _session(params: JSON, mode: str, amount_total: int | None, currency: str | None) -> JSON:
    """A new open session: Stripe's example with what the request set. No payment intent
    exists before the customer pays (API 2022-08-01 on)."""
    session = example("checkout.session")
    session_id = new_id("cs_test")
    created = _now()
    session.update(
        id=session_id,
        after_expiration=None,
        amount_subtotal=amount_total,
        amount_total=amount_total,
        cancel_url=params.get("cancel_url"),
        client_reference_id=params.get("client_reference_id"),
        collected_information=None,
        created=created,
        currency=currency,
        customer=params.get("customer"),
        customer_details=None,
        customer_email=params.get("customer_email"),
        expires_at=int(params.get("expires_at", created + SESSION_TTL_S)),
        invoice=None,
        metadata=params.get("metadata") or {},
        mode=mode,
        payment_intent=None,
        payment_status="unpaid",
        shipping_address_collection=None,
        shipping_cost=None,
        status="open",
        subscription=None,
        success_url=params.get("success_url"),
        total_details={"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        ui_mode=params.get("ui_mode", "hosted"),
        url=f"https://checkout.stripe.com/c/pay/{session_id}",
    )
    return session


def _payment_intent(params: JSON, status: str) -> JSON:
    """A payment intent: Stripe's example with what the request set, in `status`."""
    intent = example("payment_intent")
    intent_id = new_id("pi")
    amount = int(params["amount"])
    succeeded = status == "succeeded"
    intent.update(
        id=intent_id,
        amount=amount,
        amount_capturable=0,
        amount_received=amount if succeeded else 0,
        canceled_at=None,
        client_secret=f"{intent_id}_secret_{secrets.token_hex(12)}",
        created=_now(),
        currency=params["currency"],
        customer=params.get("customer"),
        description=params.get("description"),
        last_payment_error=None,
        latest_charge=new_id("ch") if succeeded else None,
        metadata=params.get("metadata") or {},
        next_action={"type": "use_stripe_sdk", "use_stripe_sdk": {}}
        if status == "requires_action"
        else None,
        payment_method=params.get("payment_method"),
        setup_future_usage=params.get("setup_future_usage"),
        shipping=None,
        status=status,
        transfer_data=None,
    )
    return intent


def event(type: str, obj: JSON, *, id: str | None = None, created: int | None = None) -> JSON:
    """A webhook event (as delivered and as listed) wrapping `obj`."""
    return {
        "id": id or new_id("evt"),
        "object": "event",
        "api_version": API_VERSION,
        "created": _now() if created is None else created,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": type,
    }


class _New(enum.Enum):
    ID = "a new id"


NEW_ID = _New.ID  # default of builder fields that hold a fresh id unless set (None allowed)


def _resolve(value: str | _New | None, prefix: str) -> str | None:
    return new_id(prefix) if value is NEW_ID else value


def checkout_session(
    *,
    id: str | None = None,
    account_id: str,
    mode: str = "payment",
    payment_status: str = "paid",
    status: str = "complete",
    amount_total: int,
    currency: str = "usd",
    metadata: dict[str, str],
    customer: str | _New | None = NEW_ID,
    payment_intent: str | _New | None = NEW_ID,
    subscription: str | _New | None = NEW_ID,
) -> JSON:
    """A finished session. Like Stripe, a new payment_intent only in payment mode and a new
    subscription only in subscription mode; pass ids (or None) to override."""
    created = _now()
    return {
        "id": id or new_id("cs_test"),
        "object": "checkout.session",
        "amount_subtotal": amount_total,
        "amount_total": amount_total,
        "cancel_url": None,
        "client_reference_id": account_id,
        "created": created,
        "currency": currency,
        "customer": _resolve(customer, "cus"),
        "expires_at": created + SESSION_TTL_S,
        "invoice": None,
        "livemode": False,
        "metadata": metadata,
        "mode": mode,
        "payment_intent": _resolve(payment_intent, "pi") if mode == "payment" else None,
        "payment_status": payment_status,
        "status": status,
        "subscription": _resolve(subscription, "sub") if mode == "subscription" else None,
        "success_url": None,
        "ui_mode": "hosted",
        "url": None,
    }


def charge(
    *,
    id: str | None = None,
    payment_intent: str,
    amount: int,
    amount_refunded: int = 0,
    refunds: list[JSON] | None = None,
    currency: str = "usd",
) -> JSON:
    """A captured charge. `refunds` is left out unless given: since API 2022-11-15 Stripe
    sends it only when expanded, so handlers must rely on `amount_refunded`."""
    assert 0 <= amount_refunded <= amount
    charge_id = id or new_id("ch")
    body = {
        "id": charge_id,
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": amount_refunded,
        "balance_transaction": new_id("txn"),
        "captured": True,
        "created": _now(),
        "currency": currency,
        "disputed": False,
        "livemode": False,
        "metadata": {},
        "paid": True,
        "payment_intent": payment_intent,
        "refunded": amount_refunded == amount,
        "status": "succeeded",
    }
    if refunds is not None:
        body["refunds"] = {
            "object": "list",
            "data": refunds,
            "has_more": False,
            "total_count": len(refunds),
            "url": f"/v1/charges/{charge_id}/refunds",
        }
    return body


def refund(
    *,
    id: str | None = None,
    payment_intent: str,
    charge: str,
    amount: int,
    status: str = "succeeded",
    currency: str = "usd",
) -> JSON:
    return {
        "id": id or new_id("re"),
        "object": "refund",
        "amount": amount,
        "balance_transaction": new_id("txn"),
        "charge": charge,
        "created": _now(),
        "currency": currency,
        "metadata": {},
        "payment_intent": payment_intent,
        "reason": None,
        "receipt_number": None,
        "source_transfer_reversal": None,
        "status": status,
        "transfer_reversal": None,
    }


def dispute(
    *,
    id: str | None = None,
    charge: str,
    payment_intent: str,
    amount: int,
    reason: str = "fraudulent",
    status: str = "needs_response",
    currency: str = "usd",
) -> JSON:
    created = _now()
    return {
        "id": id or new_id("dp"),
        "object": "dispute",
        "amount": amount,
        "balance_transactions": [],
        "charge": charge,
        "created": created,
        "currency": currency,
        "evidence_details": {
            "due_by": created + DISPUTE_EVIDENCE_S,
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
        },
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "payment_intent": payment_intent,
        "reason": reason,
        "status": status,
    }


def invoice(
    *,
    id: str | None = None,
    customer: str,
    subscription: str,
    price_id: str,
    period_start: int,
    period_end: int,
    amount_paid: int,
    currency: str = "usd",
    billing_reason: str = "subscription_cycle",
) -> JSON:
    """A paid subscription invoice in the current shape: the subscription under
    parent.subscription_details (no top-level `subscription`), the service period and
    price on the line. The invoice-level period is, as in Stripe, the previous period for
    a renewal and a single instant for the first invoice: handlers must read the line."""
    invoice_id = id or new_id("in")
    now = _now()
    previous_start = period_start - (period_end - period_start)
    line = {
        "id": new_id("il"),
        "object": "line_item",
        "amount": amount_paid,
        "currency": currency,
        "description": None,
        "invoice": invoice_id,
        "livemode": False,
        "metadata": {},
        "parent": {
            "type": "subscription_item_details",
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": False,
                "proration_details": {"credited_items": None},
                "subscription": subscription,
                "subscription_item": new_id("si"),
            },
        },
        "period": {"start": period_start, "end": period_end},
        "pricing": {
            "type": "price_details",
            "price_details": {"price": price_id, "product": new_id("prod")},
            "unit_amount_decimal": str(amount_paid),
        },
        "quantity": 1,
        "subscription": subscription,
        "subtotal": amount_paid,
    }
    return {
        "id": invoice_id,
        "object": "invoice",
        "amount_due": amount_paid,
        "amount_paid": amount_paid,
        "amount_remaining": 0,
        "billing_reason": billing_reason,
        "collection_method": "charge_automatically",
        "created": now,
        "currency": currency,
        "customer": customer,
        "lines": {
            "object": "list",
            "data": [line],
            "has_more": False,
            "total_count": 1,
            "url": f"/v1/invoices/{invoice_id}/lines",
        },
        "livemode": False,
        "metadata": {},
        "parent": {
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {"metadata": {}, "subscription": subscription},
        },
        "period_start": previous_start if billing_reason == "subscription_cycle" else now,
        "period_end": period_start if billing_reason == "subscription_cycle" else now,
        "status": "paid",
        "status_transitions": {"finalized_at": now, "paid_at": now},
        "subtotal": amount_paid,
        "total": amount_paid,
    }


def subscription(
    *,
    id: str | None = None,
    customer: str,
    price_id: str,
    status: str = "active",
    current_period_start: int,
    current_period_end: int,
    metadata: dict[str, str] | None = None,
    currency: str = "usd",
) -> JSON:
    """A subscription in the current shape: the period on items.data[0], not top level."""
    subscription_id = id or new_id("sub")
    now = _now()
    ended_at = now if status == "canceled" else None
    item = {
        "id": new_id("si"),
        "object": "subscription_item",
        "created": current_period_start,
        "current_period_start": current_period_start,
        "current_period_end": current_period_end,
        "metadata": {},
        "price": {
            "id": price_id,
            "object": "price",
            "active": True,
            "currency": currency,
            "product": new_id("prod"),
            "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"},
            "type": "recurring",
        },
        "quantity": 1,
        "subscription": subscription_id,
    }
    return {
        "id": subscription_id,
        "object": "subscription",
        "billing_cycle_anchor": current_period_start,
        "cancel_at": None,
        "cancel_at_period_end": False,
        "canceled_at": ended_at,
        "collection_method": "charge_automatically",
        "created": current_period_start,
        "currency": currency,
        "customer": customer,
        "ended_at": ended_at,
        "items": {
            "object": "list",
            "data": [item],
            "has_more": False,
            "total_count": 1,
            "url": f"/v1/subscription_items?subscription={subscription_id}",
        },
        "latest_invoice": None,
        "livemode": False,
        "metadata": metadata or {},
        "start_date": current_period_start,
        "status": status,
    }


def sign(payload: str, secret: str, *, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header Stripe would send with `payload` (timestamp: now)."""
    return stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp)


def compute_v1(payload: str, secret: str, timestamp: int) -> str:
    """A raw v1 signature: hex HMAC-SHA256 of "{timestamp}.{payload}" keyed by the secret."""
    signed = f"{timestamp}.{payload}".encode()
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_header(timestamp: int, v1: Sequence[str], v0: Sequence[str] = ()) -> str:
    """A header from raw signatures, for the unusual ones: two v1 (a secret being rolled),
    v0 only (never accepted), none."""
    parts = [f"t={timestamp}", *(f"v1={s}" for s in v1), *(f"v0={s}" for s in v0)]
    return ",".join(parts)
