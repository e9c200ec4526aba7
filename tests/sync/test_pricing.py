"""Quotes (sync/pricing.py): hand-computed figures over real SQL, the rounding rule, typed
errors, the account's current plan, and properties of the pure arithmetic.

Every test prices its own credit type, packs and plans (tests share SQL)."""

from __future__ import annotations

import uuid
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from sync import pricing
from sync.catalog_file import CatalogError, parse_catalog
from sync.db import write_transaction
from sync.models import T_SUBSCRIPTIONS
from sync.pricing import Pack, Plan, PriceTable, Slab

# The example catalog's prices (examples/catalog.toml).
GRADUATED = (Slab(1, 999, 10), Slab(1000, 9999, 8), Slab(10000, None, 6))
VOLUME = (Slab(1, 599, 5), Slab(600, None, 4))


def _tag() -> str:
    return uuid.uuid4().hex[:10]


def _prices(engine: Engine, mode: pricing.Mode, minimum: int, slabs: tuple[Slab, ...]) -> str:
    """A fresh credit type priced by `slabs`; returns it."""
    ct = f"ct_{_tag()}"
    pricing.replace_prices(engine, [PriceTable(ct, "usd", mode, minimum, slabs)])
    return ct


def _plan(engine: Engine, percent: int, active: bool = True) -> str:
    tag = _tag()
    plan = Plan(f"plan-{tag}", f"price_{tag}", {"credits": 10}, 0, percent, active=active)
    pricing.save_plans(engine, [plan])
    return plan.id


def _subscribe(engine: Engine, account: str, plan_id: str, status: str, updated_at_ms: int):
    row = {
        "id": f"sub_{_tag()}",
        "account_id": account,
        "plan_id": plan_id,
        "status": status,
        "current_period_start_ms": None,
        "current_period_end_ms": None,
        "updated_at_ms": updated_at_ms,
    }
    write_transaction(engine, lambda conn: conn.execute(T_SUBSCRIPTIONS.insert(), row))


@pytest.fixture
def graduated(engine: Engine) -> str:
    return _prices(engine, "graduated", 10, GRADUATED)


@pytest.fixture
def volume(engine: Engine) -> str:
    return _prices(engine, "volume", 60, VOLUME)


# --- figures ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("credits", "subtotal"),
    [
        (10, 100),  # the minimum
        (999, 9_990),  # the top of the first slab
        (1_000, 9_990 + 8),  # 999 at 10, 1 at 8
        (1_500, 9_990 + 501 * 8),
        (9_999, 9_990 + 9_000 * 8),
        (10_000, 9_990 + 72_000 + 6),
        (12_345, 9_990 + 72_000 + 2_346 * 6),
    ],
)
def test_graduated_figures(engine: Engine, graduated: str, credits: int, subtotal: int) -> None:
    q = pricing.quote(engine, graduated, credits)
    assert (q.subtotal, q.discount, q.amount, q.currency) == (subtotal, 0, subtotal, "usd")
    assert q.breakdown[-1] == {"step": "total", "amount": subtotal}


def test_graduated_breakdown_at_the_slab_boundary(engine: Engine, graduated: str) -> None:
    q = pricing.quote(engine, graduated, 1_000)
    assert q.breakdown == (
        {"step": "slab", "from": 1, "to": 999, "credits": 999, "unit_amount": 10, "amount": 9990},
        {"step": "slab", "from": 1000, "to": 9999, "credits": 1, "unit_amount": 8, "amount": 8},
        {"step": "total", "amount": 9998},
    )


@pytest.mark.parametrize(
    ("credits", "amount"),
    [(60, 300), (599, 2_995), (600, 2_400), (1_000, 4_000)],  # 600 at 4 costs less than 599 at 5
)
def test_volume_figures(engine: Engine, volume: str, credits: int, amount: int) -> None:
    q = pricing.quote(engine, volume, credits)
    assert q.amount == q.subtotal == amount
    (slab, total) = q.breakdown
    assert slab["credits"] == credits and slab["amount"] == amount
    assert total == {"step": "total", "amount": amount}


def test_the_minimum_is_allowed_and_one_below_is_refused(engine: Engine, graduated: str) -> None:
    assert pricing.quote(engine, graduated, 10).amount == 100
    with pytest.raises(pricing.BelowMinimum) as info:
        pricing.quote(engine, graduated, 9)
    assert info.value.field == "credits" and info.value.details == {"minimum": 10}


def test_above_the_last_bounded_slab_is_refused(engine: Engine) -> None:
    ct = _prices(engine, "graduated", 1, (Slab(1, 50, 3), Slab(51, 100, 2)))
    assert pricing.quote(engine, ct, 100).amount == 50 * 3 + 50 * 2
    with pytest.raises(pricing.AboveMaximum) as info:
        pricing.quote(engine, ct, 101)
    assert info.value.field == "credits" and info.value.details == {"maximum": 100}


def test_an_amount_past_2_53_is_refused(engine: Engine) -> None:
    ct = _prices(engine, "volume", 1, (Slab(1, None, pricing.AMOUNT_MINOR_MAX),))
    assert pricing.quote(engine, ct, 1).amount == pricing.AMOUNT_MINOR_MAX
    with pytest.raises(pricing.AboveMaximum, match="price would pass"):
        pricing.quote(engine, ct, 2)


def test_unknown_credit_type(engine: Engine) -> None:
    with pytest.raises(pricing.UnknownCreditType) as info:
        pricing.quote(engine, f"ct_{_tag()}", 10)
    assert info.value.field == "credit_type"


@pytest.mark.parametrize("credits", [0, -1, True, 10.0, "10", None, pricing.CREDITS_MAX + 1])
def test_credits_must_be_a_bounded_positive_int(
    engine: Engine, graduated: str, credits: object
) -> None:
    with pytest.raises(pricing.PricingError) as info:
        pricing.quote(engine, graduated, credits)  # type: ignore[arg-type]
    assert info.value.field == "credits"


# --- discounts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("percent", "discount"),
    [(0, 0), (1, 99), (20, 1_999), (33, 3_299), (99, 9_899), (100, 9_999)],
)
def test_the_discount_is_rounded_down(engine: Engine, percent: int, discount: int) -> None:
    ct = _prices(engine, "volume", 1, (Slab(1, None, 9),))
    q = pricing.quote(engine, ct, 1_111, discount_percent=percent)  # subtotal 9999
    assert (q.subtotal, q.discount, q.amount) == (9_999, discount, 9_999 - discount)
    if percent:
        assert q.breakdown[-2] == {
            "step": "discount",
            "plan": None,
            "percent": percent,
            "amount": -discount,
        }
    else:
        assert [s["step"] for s in q.breakdown] == ["slab", "total"]


def test_a_plan_discounts_and_is_named(engine: Engine, graduated: str) -> None:
    plan = _plan(engine, 20)
    assert pricing.plan_discount(engine, plan) == 20
    q = pricing.quote(engine, graduated, 1_000, plan_id=plan)  # 9998 - 1999 (1999.6 down)
    assert (q.subtotal, q.discount, q.amount, q.plan_id) == (9_998, 1_999, 7_999, plan)
    assert q.breakdown[-2:] == (
        {"step": "discount", "plan": plan, "percent": 20, "amount": -1999},
        {"step": "total", "amount": 7999},
    )


def test_an_unknown_or_inactive_plan_is_refused(engine: Engine, graduated: str) -> None:
    retired = _plan(engine, 20, active=False)
    for plan in (retired, f"plan-{_tag()}"):
        with pytest.raises(pricing.UnknownPlan) as info:
            pricing.quote(engine, graduated, 100, plan_id=plan)
        assert info.value.field == "plan"
        with pytest.raises(pricing.UnknownPlan):
            pricing.plan_discount(engine, plan)


def test_a_percent_and_a_plan_together_are_a_programming_error(
    engine: Engine, graduated: str
) -> None:
    with pytest.raises(ValueError, match="not both"):
        pricing.quote(engine, graduated, 100, discount_percent=5, plan_id=_plan(engine, 5))
    with pytest.raises(pricing.PricingError) as info:
        pricing.quote(engine, graduated, 100, discount_percent=101)
    assert info.value.field == "discount_percent"


# --- the account's plan ---------------------------------------------------------------------


def test_current_plan_is_the_newest_subscription_in_force(engine: Engine) -> None:
    acct = f"acct-{_tag()}"
    assert pricing.current_plan(engine, acct) is None
    old, new, gone = _plan(engine, 10), _plan(engine, 20), _plan(engine, 30)
    _subscribe(engine, acct, old, "active", 1_000)
    assert pricing.current_plan(engine, acct) == old
    _subscribe(engine, acct, gone, "canceled", 3_000)  # newer, but not in force
    assert pricing.current_plan(engine, acct) == old
    _subscribe(engine, acct, new, "past_due", 2_000)  # still in force, and newer
    assert pricing.current_plan(engine, acct) == new
    other = f"acct-{_tag()}"
    _subscribe(engine, other, old, "trialing", 5)
    assert pricing.current_plan(engine, other) == old


def test_an_accounts_plan_discounts_even_once_retired(engine: Engine, graduated: str) -> None:
    acct = f"acct-{_tag()}"
    assert pricing.quote(engine, graduated, 100, account_id=acct).discount == 0
    plan = _plan(engine, 20)
    _subscribe(engine, acct, plan, "active", 1)
    q = pricing.quote(engine, graduated, 1_000, account_id=acct)
    assert (q.amount, q.plan_id) == (7_999, plan)
    pricing.save_plans(engine, [Plan(plan, f"price_{plan}", {"credits": 10}, 0, 20, active=False)])
    assert pricing.quote(engine, graduated, 1_000, account_id=acct).amount == 7_999
    # A plan named in the query wins over the account's.
    q = pricing.quote(engine, graduated, 1_000, account_id=acct, plan_id=_plan(engine, 50))
    assert q.amount == 9_998 - 4_999


# --- packs ----------------------------------------------------------------------------------


def test_pack_quote(engine: Engine) -> None:
    tag = _tag()
    small = Pack(f"small-{tag}", "credits", 50, 500, "usd")
    off = Pack(f"off-{tag}", "credits", 100, 900, "usd", active=False)
    pricing.save_packs(engine, [small, off])
    q = pricing.pack_quote(engine, small.id)
    assert (q.credits, q.subtotal, q.amount, q.pack_id) == (50, 500, 500, small.id)
    assert q.breakdown == (
        {"step": "pack", "pack": small.id, "credits": 50, "amount": 500},
        {"step": "total", "amount": 500},
    )
    plan = _plan(engine, 33)
    assert pricing.pack_quote(engine, small.id, plan_id=plan).amount == 500 - 165
    for pack_id in (off.id, f"nope-{tag}"):
        with pytest.raises(pricing.UnknownPack) as info:
            pricing.pack_quote(engine, pack_id)
        assert info.value.field == "pack_id"


def test_save_plans_lets_two_plans_swap_price_ids(engine: Engine) -> None:
    a, b = _plan(engine, 1), _plan(engine, 2)
    pa, pb = (p.stripe_price_id for p in (pricing.get_plan(engine, a), pricing.get_plan(engine, b)))
    pricing.save_plans(
        engine,
        [Plan(a, pb, {"credits": 10}, 0, 1), Plan(b, pa, {"credits": 10}, 0, 2)],
    )
    assert pricing.get_plan(engine, a).stripe_price_id == pb  # type: ignore[union-attr]
    assert pricing.get_plan(engine, b).stripe_price_id == pa  # type: ignore[union-attr]


# --- properties of the arithmetic (pure, no SQL) --------------------------------------------

PROPERTY_CREDITS_SPAN = 400  # per-credit sums stay cheap


@st.composite
def tables(draw: st.DrawFn, mode: pricing.Mode) -> PriceTable:
    widths = draw(st.lists(st.integers(1, 60), min_size=1, max_size=6))
    units = draw(st.lists(st.integers(0, 10**9), min_size=len(widths), max_size=len(widths)))
    bounded = draw(st.booleans())
    slabs, start = [], 1
    for i, (width, unit) in enumerate(zip(widths, units, strict=True)):
        last = i == len(widths) - 1
        slabs.append(Slab(start, None if last and not bounded else start + width - 1, unit))
        start += width
    top = slabs[-1].to_credits or start + PROPERTY_CREDITS_SPAN
    minimum = draw(st.integers(1, top))
    return PriceTable("ct", "usd", mode, minimum, tuple(slabs))


def _unit(table: PriceTable, credit: int) -> int:
    (slab,) = [s for s in table.slabs if s.holds(credit)]
    return slab.unit_amount


def _ints(q: pricing.Quote) -> None:
    for v in (q.credits, q.subtotal, q.discount_percent, q.discount, q.amount):
        assert type(v) is int
    for step in q.breakdown:
        for key, v in step.items():
            assert type(v) is int or key in ("step", "plan", "pack") or (key, v) == ("to", None)


@settings(max_examples=200, deadline=None)
@given(table=tables("graduated"), data=st.data(), percent=st.integers(0, 100))
def test_graduated_amount_is_the_sum_of_per_credit_prices(
    table: PriceTable, data: st.DataObject, percent: int
) -> None:
    top = min(table.max_credits, table.min_credits + PROPERTY_CREDITS_SPAN)
    credits = data.draw(st.integers(table.min_credits, top))
    q = pricing.price(table, credits, percent)
    assert q.subtotal == sum(_unit(table, c) for c in range(1, credits + 1))
    assert sum(s["credits"] for s in q.breakdown if s["step"] == "slab") == credits
    assert q.discount == int(Fraction(q.subtotal * percent, 100))  # floor: never more off
    assert q.discount * 100 <= q.subtotal * percent < (q.discount + 1) * 100
    assert q.amount == q.subtotal - q.discount >= 0
    _ints(q)


@settings(max_examples=200, deadline=None)
@given(table=tables("volume"), data=st.data(), percent=st.integers(0, 100))
def test_volume_prices_every_credit_by_the_slab_holding_the_quantity(
    table: PriceTable, data: st.DataObject, percent: int
) -> None:
    top = min(table.max_credits, table.min_credits + PROPERTY_CREDITS_SPAN)
    credits = data.draw(st.integers(table.min_credits, top))
    q = pricing.price(table, credits, percent)
    assert q.subtotal == credits * _unit(table, credits)
    assert q.amount + q.discount == q.subtotal
    _ints(q)


# --- issue 13 item 11: what Stripe would refuse to charge --------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "refused"),
    [
        (50, "usd", None),
        (49, "usd", "below Stripe's minimum charge of 50"),
        (30, "gbp", None),
        (29, "gbp", "below Stripe's minimum charge of 30"),
        (49, "jpy", "below Stripe's minimum charge of 50"),  # yen: no minor unit
        (17_499, "huf", "below Stripe's minimum charge of 17500"),
        (1, "isk", None),  # a currency whose minimum only Stripe can convert: left to Stripe
        (99_999_999, "usd", None),
        (100_000_000, "usd", "above Stripe's maximum amount of 99999999"),
    ],
)
def test_stripe_refusal_by_currency_minimum_and_the_eight_digit_maximum(
    amount: int, currency: str, refused: str | None
) -> None:
    refusal = pricing.stripe_refusal(amount, currency)
    if refused is None:
        assert refusal is None
    else:
        assert refusal is not None and str(refusal).endswith(refused)
        assert refusal.field == "amount" and set(refusal.details) <= {"minimum", "maximum"}


def test_a_discount_below_stripe_minimum_is_not_chargeable() -> None:
    table = PriceTable("credits", "usd", "graduated", 10, (Slab(1, None, 6),))
    assert pricing.chargeable(pricing.price(table, 10)).amount == 60
    with pytest.raises(pricing.BelowMinimum, match="below Stripe's minimum charge of 50"):
        pricing.chargeable(pricing.price(table, 10, discount_percent=20))  # 48 cents


PACK = '[[packs]]\nid = "p"\ncredits = 1\ncredit_type = "credits"\namount = {}\ncurrency = "usd"\n'
GBP_PRICES = (
    '[prices.credits]\ncurrency = "gbp"\nmode = "volume"\nminimum = {}\n'
    "slabs = [{{ from = 1, unit_amount = 5 }}]\n"
)


@pytest.mark.parametrize(
    ("template", "refused", "accepted", "error"),
    [
        (
            PACK,
            49,
            50,
            "packs[p].amount: Stripe would refuse it: 49 usd minor units is below Stripe's"
            " minimum charge of 50",
        ),
        (
            PACK,
            100_000_000,
            99_999_999,
            "packs[p].amount: Stripe would refuse it: 100000000 usd minor units is above"
            " Stripe's maximum amount of 99999999",
        ),
        (
            GBP_PRICES,
            5,
            6,
            "prices.credits.minimum: Stripe would refuse its price: 25 gbp minor units is below"
            " Stripe's minimum charge of 30",
        ),
    ],
)
def test_the_catalog_refuses_prices_stripe_would_refuse(
    template: str, refused: int, accepted: int, error: str
) -> None:
    with pytest.raises(CatalogError) as caught:
        parse_catalog(template.format(refused), "catalog.toml")
    assert str(caught.value) == f"catalog.toml: {error}"
    parse_catalog(template.format(accepted), "catalog.toml")
