"""GET /v1/packs and GET /v1/prices/quote over real HTTP to a running `creditmeter api` on
real Redis and SQL.

This module's packs, prices and plans are its own (ids and credit types carry the module's
prefix) and are written with the savers, not a catalog apply: an apply would switch off the
packs and plans of every other test sharing the SQL."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from sync import pricing
from sync.db import write_transaction
from sync.models import T_SUBSCRIPTIONS
from sync.pricing import Pack, Plan, PriceTable, Slab
from tests.api.conftest import account, bearer

PROBLEM = "application/problem+json"


@dataclass(frozen=True)
class Seeded:
    credits: str  # graduated, as the example catalog's `credits`
    video: str  # volume, as the example catalog's `video_seconds`
    capped: str  # graduated, the last slab bounded at 100
    small: str
    large: str
    retired_pack: str
    pro: str  # 20% off
    retired_plan: str  # 50% off, no longer offered


@pytest.fixture(scope="module")
def seeded(api_engine: Engine, api_prefix: str) -> Seeded:
    p = api_prefix
    s = Seeded(
        credits=f"c_{p}",
        video=f"v_{p}",
        capped=f"k_{p}",
        small=f"{p}-small",
        large=f"{p}-large",
        retired_pack=f"{p}-old",
        pro=f"{p}-pro",
        retired_plan=f"{p}-old",
    )
    pricing.replace_prices(
        api_engine,
        [
            PriceTable(
                s.credits,
                "usd",
                "graduated",
                10,
                (Slab(1, 999, 10), Slab(1000, 9999, 8), Slab(10000, None, 6)),
            ),
            PriceTable(s.video, "usd", "volume", 60, (Slab(1, 599, 5), Slab(600, None, 4))),
            PriceTable(s.capped, "eur", "graduated", 1, (Slab(1, 100, 3),)),
        ],
    )
    pricing.save_packs(
        api_engine,
        [
            Pack(s.large, s.credits, 100, 900, "usd", "100 credits"),
            Pack(s.small, s.credits, 50, 500, "usd", "50 credits"),
            Pack(s.retired_pack, s.credits, 10, 100, "usd", active=False),
        ],
    )
    pricing.save_plans(
        api_engine,
        [
            Plan(s.pro, f"price_{p}_pro", {s.credits: 1000}, 500, 20),
            Plan(s.retired_plan, f"price_{p}_old", {s.credits: 10}, 0, 50, active=False),
        ],
    )
    return s


def quote(http: httpx.Client, key: str, **params: Any) -> httpx.Response:
    return http.get("/v1/prices/quote", params=params, headers=bearer(key))


def assert_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["status"] == status and body["type"] and body["title"] and body["detail"]
    return body


def subscribe(engine: Engine, account_id: str, plan_id: str) -> None:
    row = {
        "id": f"sub_{account_id}",
        "account_id": account_id,
        "plan_id": plan_id,
        "status": "active",
        "current_period_start_ms": None,
        "current_period_end_ms": None,
        "updated_at_ms": 1,
    }
    write_transaction(engine, lambda conn: conn.execute(T_SUBSCRIPTIONS.insert(), row))


# --- packs ------------------------------------------------------------------------------


def test_packs_lists_the_active_ones_by_credit_type_then_credits(
    http: httpx.Client, read_key: str, seeded: Seeded
) -> None:
    r = http.get("/v1/packs", headers=bearer(read_key))
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    mine = [p for p in data if p["credit_type"] == seeded.credits]
    assert mine == [
        {
            "id": seeded.small,
            "display_name": "50 credits",
            "credits": 50,
            "credit_type": seeded.credits,
            "amount": 500,
            "currency": "usd",
        },
        {
            "id": seeded.large,
            "display_name": "100 credits",
            "credits": 100,
            "credit_type": seeded.credits,
            "amount": 900,
            "currency": "usd",
        },
    ]
    order = [(p["credit_type"], p["credits"]) for p in data]
    assert order == sorted(order)


# --- quotes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("credits", "amount"),
    [(10, 100), (999, 9_990), (1_000, 9_998), (9_999, 81_990), (10_000, 81_996)],
)
def test_graduated_quote(
    http: httpx.Client, read_key: str, seeded: Seeded, credits: int, amount: int
) -> None:
    r = quote(http, read_key, credit_type=seeded.credits, credits=credits)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["credits"], body["amount"], body["subtotal"], body["currency"]) == (
        credits,
        amount,
        amount,
        "usd",
    )
    assert (body["credit_type"], body["discount_percent"], body["plan"]) == (
        seeded.credits,
        0,
        None,
    )


def test_quote_body_at_the_boundary_with_a_plan(
    http: httpx.Client, read_key: str, seeded: Seeded
) -> None:
    r = quote(http, read_key, credit_type=seeded.credits, credits="1000", plan=seeded.pro)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "credit_type": seeded.credits,
        "credits": 1000,
        "subtotal": 9998,
        "discount_percent": 20,
        "discount": 1999,  # 20% of 9998 is 1999.6: rounded down
        "amount": 7999,
        "currency": "usd",
        "plan": seeded.pro,
        "breakdown": [
            {
                "step": "slab",
                "from": 1,
                "to": 999,
                "credits": 999,
                "unit_amount": 10,
                "amount": 9990,
            },
            {"step": "slab", "from": 1000, "to": 9999, "credits": 1, "unit_amount": 8, "amount": 8},
            {"step": "discount", "plan": seeded.pro, "percent": 20, "amount": -1999},
            {"step": "total", "amount": 7999},
        ],
    }


def test_volume_quote(http: httpx.Client, read_key: str, seeded: Seeded) -> None:
    r = quote(http, read_key, credit_type=seeded.video, credits=600)
    assert r.status_code == 200, r.text
    assert r.json()["amount"] == 2400
    assert r.json()["breakdown"][0] == {
        "step": "slab",
        "from": 600,
        "to": None,
        "credits": 600,
        "unit_amount": 4,
        "amount": 2400,
    }


def test_the_accounts_current_plan_discounts(
    http: httpx.Client, read_key: str, seeded: Seeded, api_engine: Engine
) -> None:
    subscriber, other = account(), account()
    subscribe(api_engine, subscriber, seeded.pro)
    r = quote(http, read_key, credit_type=seeded.credits, credits=1000, account_id=subscriber)
    assert (r.json()["amount"], r.json()["plan"]) == (7999, seeded.pro)
    r = quote(http, read_key, credit_type=seeded.credits, credits=1000, account_id=other)
    assert (r.json()["amount"], r.json()["plan"]) == (9998, None)
    # A retired plan keeps discounting its subscribers, but cannot be named.
    retired = account()
    subscribe(api_engine, retired, seeded.retired_plan)
    r = quote(http, read_key, credit_type=seeded.credits, credits=1000, account_id=retired)
    assert r.json()["amount"] == 9998 - 4999


@pytest.mark.parametrize("credits", ["10.5", "1e3", "abc", "10.0", "+10", "1_000", "0", "-1", ""])
def test_credits_must_be_a_positive_integer_in_digits(
    http: httpx.Client, read_key: str, seeded: Seeded, credits: str
) -> None:
    body = assert_problem(quote(http, read_key, credit_type=seeded.credits, credits=credits), 422)
    assert [e["field"] for e in body["errors"]] == ["query.credits"]


def test_missing_or_malformed_parameters_422(
    http: httpx.Client, read_key: str, seeded: Seeded
) -> None:
    body = assert_problem(quote(http, read_key, credit_type=seeded.credits), 422)
    assert [e["field"] for e in body["errors"]] == ["query.credits"]
    body = assert_problem(quote(http, read_key, credit_type="Bad!", credits=10), 422)
    assert [e["field"] for e in body["errors"]] == ["query.credit_type"]
    body = assert_problem(quote(http, read_key, credit_type=seeded.credits, credits=2**53), 422)
    assert [e["field"] for e in body["errors"]] == ["query.credits"]


@pytest.mark.parametrize(
    ("params", "slug", "field", "extra"),
    [
        ({"credits": 9}, "below-minimum", "credits", {"minimum": 10}),
        (
            {"credit_type": "nothing_sold_here", "credits": 10},
            "unknown-credit-type",
            "credit_type",
            {},
        ),
        ({"credit_type": "capped", "credits": 101}, "above-maximum", "credits", {"maximum": 100}),
        ({"credits": 10, "plan": "no-such-plan"}, "unknown-plan", "plan", {}),
        ({"credits": 10, "plan": "retired"}, "unknown-plan", "plan", {}),
        # An amount Stripe could not charge: the quote says what checkout would answer.
        ({"credits": 100_000_000}, "above-maximum", "credits", {"maximum": 99_999_999}),
    ],
)
def test_pricing_errors_are_422_naming_the_parameter(
    http: httpx.Client,
    read_key: str,
    seeded: Seeded,
    params: dict[str, Any],
    slug: str,
    field: str,
    extra: dict[str, int],
) -> None:
    names = {"capped": seeded.capped, "retired": seeded.retired_plan}
    query = {"credit_type": seeded.credits, **{k: names.get(v, v) for k, v in params.items()}}
    body = assert_problem(quote(http, read_key, **query), 422)
    assert body["type"] == f"urn:creditmeter:problem:{slug}"
    assert body["errors"] == [{"field": f"query.{field}", "message": body["detail"], "type": slug}]
    assert body["detail"].startswith(f"{field}: ")
    for key, value in extra.items():
        assert body[key] == value


def test_a_quote_within_a_bounded_table(http: httpx.Client, read_key: str, seeded: Seeded) -> None:
    r = quote(http, read_key, credit_type=seeded.capped, credits=100)
    assert (r.json()["amount"], r.json()["currency"]) == (300, "eur")


# --- auth -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/packs", "/v1/prices/quote?credit_type=credits&credits=10"])
def test_no_key_401_and_an_account_token_403(http: httpx.Client, meter_key: str, path: str) -> None:
    assert_problem(http.get(path), 401)
    assert_problem(http.get(path, headers=bearer("cm_live_not_a_real_key")), 401)
    acct = account()
    t = http.post(
        f"/v1/accounts/{acct}/tokens", json={"ttl_seconds": 60}, headers=bearer(meter_key)
    )
    assert t.status_code == 201, t.text
    body = assert_problem(http.get(path, headers=bearer(t.json()["token"])), 403)
    assert body["required_scope"] == "read"


def test_every_scope_reads(
    http: httpx.Client, make_key: Callable[[str], str], seeded: Seeded
) -> None:
    for scope in ("read", "meter", "admin"):
        key = make_key(scope)
        assert http.get("/v1/packs", headers=bearer(key)).status_code == 200
        assert quote(http, key, credit_type=seeded.credits, credits=10).status_code == 200
