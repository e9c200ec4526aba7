"""What credits cost: packs, per-credit-type price slabs, plans (SQL), and quotes.

Every amount is an integer in the currency's minor units (cents); no float is ever made.

- volume mode: the one slab that contains `credits` prices every credit;
  graduated mode: each slab prices the credits that fall in its range.
- subtotal = the integer sum of the slab (or pack) amounts.
- discount = subtotal * percent // 100, rounded DOWN: the customer never gets more than the
  stated percent off (20% of 9999 is 1999, not 1999.8 or 2000).
- amount = subtotal - discount.

The discount is an active plan's when a plan is named; else the current plan's of the account
named (a plan retired from the catalog keeps discounting for its subscribers: `active = false`
stops selling a plan, it does not change the terms of current subscriptions).

`price` and `price_pack` are pure (tested by properties); `quote` and `pack_quote` read SQL
first. The catalog file (sync/catalog_file.py) writes these tables with the savers below.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from sqlalchemy import Engine, literal, select
from sqlalchemy.engine import Connection

from meter import bounds
from sync.db import write_transaction
from sync.models import T_PACKS, T_PLANS, T_SLABS, T_SUBSCRIPTIONS
from sync.sqlops import dialect_insert

log = logging.getLogger("creditmeter.pricing")

CREDITS_MAX: Final = bounds.CREDITS_MAX  # what one purchase may buy, like any grant
AMOUNT_MINOR_MAX: Final = 2**53 - 1  # JSON readers (JavaScript) keep integers exact to 2**53
PERCENT_MAX: Final = 100
SLABS_MAX: Final = 32  # per credit type; a quote walks them all
MODES: Final = ("volume", "graduated")
CURRENT_STATUSES: Final = ("active", "trialing", "past_due")  # a subscription still in force
CATALOG_ID_RE: Final = re.compile(r"^[a-z0-9-]{1,64}$")  # pack and plan ids: credits-small
CURRENCY_RE: Final = re.compile(r"^[a-z]{3}$")  # ISO 4217, lower case as Stripe writes it
PARKED_PRICE_PREFIX: Final = "~"  # no Stripe id has it; see save_plans

Mode = Literal["volume", "graduated"]

# Stripe's minimum charge per presentment currency, in its minor units as the API takes them
# (docs.stripe.com/currencies, "Minimum and maximum charge amounts"; jpy has no minor unit,
# huf is sent in hundredths). Any other currency's minimum is "the equivalent of 0.50 USD",
# which only Stripe can convert: those are left to Stripe, whose refusal is a 422.
STRIPE_CHARGE_MINOR_MIN: Final = {
    "usd": 50, "aed": 200, "aud": 50, "bgn": 100, "brl": 50, "cad": 50, "chf": 50,
    "czk": 1500, "dkk": 250, "eur": 50, "gbp": 30, "hkd": 400, "huf": 17500, "inr": 50,
    "jpy": 50, "mxn": 1000, "myr": 200, "nok": 300, "nzd": 50, "pln": 200, "ron": 200,
    "sek": 300, "sgd": 50, "thb": 1000,
}  # fmt: skip
STRIPE_AMOUNT_MINOR_MAX: Final = 99_999_999  # Stripe takes amounts of up to eight digits

Step = dict[str, int | str | None]


# --- errors ---------------------------------------------------------------------------------


class PricingError(ValueError):
    """A quote that cannot be made; `field` names the argument at fault, `code` the reason,
    `details` the numbers a client needs to correct it (minimum, maximum)."""

    code = "pricing-error"

    def __init__(self, field: str, message: str, **details: int | str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.details = details


class UnknownCreditType(PricingError):
    code = "unknown-credit-type"


class BelowMinimum(PricingError):
    code = "below-minimum"


class AboveMaximum(PricingError):
    code = "above-maximum"


class UnknownPack(PricingError):
    code = "unknown-pack"


class UnknownPlan(PricingError):
    code = "unknown-plan"


# --- the catalog as read from SQL -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pack:
    id: str
    credit_type: str
    credits: int
    amount: int  # the price, minor units
    currency: str
    display_name: str = ""
    active: bool = True


@dataclass(frozen=True, slots=True)
class Slab:
    from_credits: int
    to_credits: int | None  # None: no upper bound (the last slab only)
    unit_amount: int  # minor units per credit

    def holds(self, credits: int) -> bool:
        return self.from_credits <= credits and (
            self.to_credits is None or credits <= self.to_credits
        )


@dataclass(frozen=True, slots=True)
class PriceTable:
    """How one credit type is sold by the unit: its slabs, ascending and contiguous."""

    credit_type: str
    currency: str
    mode: Mode
    min_credits: int
    slabs: tuple[Slab, ...]

    @property
    def max_credits(self) -> int:
        top = self.slabs[-1].to_credits
        return CREDITS_MAX if top is None else top


@dataclass(frozen=True, slots=True)
class Plan:
    id: str
    stripe_price_id: str
    allocations: dict[str, int] = field(hash=False)  # credits per period, per credit type
    rollover_cap: int = 0  # credits per credit type that may roll into the next period
    discount_percent: int = 0  # off every purchase while subscribed
    expire_at_period_end: bool = True
    display_name: str = ""
    active: bool = True


@contextmanager
def _reading(conn_or_engine: Connection | Engine) -> Iterator[Connection]:
    if isinstance(conn_or_engine, Connection):
        yield conn_or_engine
        return
    with conn_or_engine.connect() as conn:
        yield conn


def _pack(r: Any) -> Pack:
    return Pack(
        id=r["id"],
        credit_type=r["credit_type"],
        credits=r["credits"],
        amount=r["unit_amount"],
        currency=r["currency"],
        display_name=r["display_name"],
        active=bool(r["active"]),
    )


def _plan(r: Any) -> Plan:
    return Plan(
        id=r["id"],
        stripe_price_id=r["stripe_price_id"],
        allocations=json.loads(r["allocations"]),
        rollover_cap=r["rollover_cap"],
        discount_percent=r["discount_percent"],
        expire_at_period_end=bool(r["expire_at_period_end"]),
        display_name=r["display_name"],
        active=bool(r["active"]),
    )


def load_packs(conn_or_engine: Connection | Engine, *, active_only: bool = True) -> list[Pack]:
    """Packs ordered by credit type, then credits (then id, so the order is total)."""
    query = select(T_PACKS).order_by(T_PACKS.c.credit_type, T_PACKS.c.credits, T_PACKS.c.id)
    if active_only:
        query = query.where(T_PACKS.c.active.is_(True))
    with _reading(conn_or_engine) as conn:
        return [_pack(r) for r in conn.execute(query).mappings()]


def load_plans(conn_or_engine: Connection | Engine, *, active_only: bool = True) -> list[Plan]:
    query = select(T_PLANS).order_by(T_PLANS.c.id)
    if active_only:
        query = query.where(T_PLANS.c.active.is_(True))
    with _reading(conn_or_engine) as conn:
        return [_plan(r) for r in conn.execute(query).mappings()]


def load_prices(conn_or_engine: Connection | Engine) -> dict[str, PriceTable]:
    """Every credit type's price table. The mode, currency and minimum are on every row of a
    credit type (the catalog writes them together); the first row's are used."""
    query = select(T_SLABS).order_by(T_SLABS.c.credit_type, T_SLABS.c.from_credits)
    rows: dict[str, list[Any]] = {}
    with _reading(conn_or_engine) as conn:
        for r in conn.execute(query).mappings():
            rows.setdefault(r["credit_type"], []).append(r)
    return {ct: _table(ct, rs) for ct, rs in rows.items()}


def _table(credit_type: str, rows: list[Any]) -> PriceTable:
    first = rows[0]
    return PriceTable(
        credit_type=credit_type,
        currency=first["currency"],
        mode=first["mode"],
        min_credits=first["min_credits"],
        slabs=tuple(Slab(r["from_credits"], r["to_credits"], r["unit_amount"]) for r in rows),
    )


def price_table(conn_or_engine: Connection | Engine, credit_type: str) -> PriceTable:
    query = (
        select(T_SLABS).where(T_SLABS.c.credit_type == credit_type).order_by(T_SLABS.c.from_credits)
    )
    with _reading(conn_or_engine) as conn:
        rows = list(conn.execute(query).mappings())
    if not rows:
        raise UnknownCreditType("credit_type", f"{credit_type!r} has no prices")
    return _table(credit_type, rows)


def current_plan(conn_or_engine: Connection | Engine, account_id: str) -> str | None:
    """The plan of the account's newest (by updated_at_ms) subscription in force, or None."""
    query = (
        select(T_SUBSCRIPTIONS.c.plan_id)
        .where(
            T_SUBSCRIPTIONS.c.account_id == account_id,
            T_SUBSCRIPTIONS.c.status.in_(CURRENT_STATUSES),
        )
        .order_by(T_SUBSCRIPTIONS.c.updated_at_ms.desc(), T_SUBSCRIPTIONS.c.id.desc())
        .limit(1)
    )
    with _reading(conn_or_engine) as conn:
        plan_id: str | None = conn.execute(query).scalar()
    return plan_id


def get_plan(conn_or_engine: Connection | Engine, plan_id: str) -> Plan | None:
    """The plan, active or not; None when SQL has no such plan."""
    with _reading(conn_or_engine) as conn:
        row = conn.execute(select(T_PLANS).where(T_PLANS.c.id == plan_id)).mappings().first()
    return None if row is None else _plan(row)


def plan_discount(conn_or_engine: Connection | Engine, plan_id: str) -> int:
    """The discount percent of an active plan; UnknownPlan for any other plan id."""
    plan = get_plan(conn_or_engine, plan_id)
    if plan is None or not plan.active:
        raise UnknownPlan("plan", f"no active plan {plan_id!r}")
    return plan.discount_percent


# --- writing (the catalog file calls these; so may admin routes) ----------------------------


def save_packs(engine: Engine, packs: list[Pack]) -> None:
    """Upserts packs by id. Packs are never deleted: purchases name them."""

    def txn(conn: Connection) -> None:
        for p in packs:
            stmt = dialect_insert(conn, T_PACKS).values(
                id=p.id,
                display_name=p.display_name,
                credit_type=p.credit_type,
                credits=p.credits,
                unit_amount=p.amount,
                currency=p.currency,
                active=p.active,
            )
            cols = ("display_name", "credit_type", "credits", "unit_amount", "currency", "active")
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["id"], set_={c: stmt.excluded[c] for c in cols}
                )
            )

    write_transaction(engine, txn)


def replace_prices(
    engine: Engine, tables: list[PriceTable], removed: list[str] | tuple[str, ...] = ()
) -> None:
    """Each table's credit type gets exactly its slabs; the credit types in `removed` lose
    theirs (they are no longer sold by the unit). One transaction."""

    def txn(conn: Connection) -> None:
        for ct in [*removed, *(t.credit_type for t in tables)]:
            conn.execute(T_SLABS.delete().where(T_SLABS.c.credit_type == ct))
        rows = [
            {
                "credit_type": t.credit_type,
                "mode": t.mode,
                "from_credits": s.from_credits,
                "to_credits": s.to_credits,
                "unit_amount": s.unit_amount,
                "currency": t.currency,
                "min_credits": t.min_credits,
            }
            for t in tables
            for s in t.slabs
        ]
        if rows:
            conn.execute(T_SLABS.insert(), rows)

    write_transaction(engine, txn)


def allocations_json(allocations: dict[str, int]) -> str:
    return json.dumps(allocations, sort_keys=True, separators=(",", ":"))


def save_plans(engine: Engine, plans: list[Plan]) -> None:
    """Upserts plans by id. Plans are never deleted: subscriptions and purchases name them."""

    def txn(conn: Connection) -> None:
        # Price ids are unique: park the saved plans' own first, so two plans may swap them.
        parked = literal(PARKED_PRICE_PREFIX) + T_PLANS.c.id
        ids = [p.id for p in plans]
        conn.execute(T_PLANS.update().where(T_PLANS.c.id.in_(ids)).values(stripe_price_id=parked))
        for p in plans:
            stmt = dialect_insert(conn, T_PLANS).values(
                id=p.id,
                display_name=p.display_name,
                stripe_price_id=p.stripe_price_id,
                allocations=allocations_json(p.allocations),
                expire_at_period_end=p.expire_at_period_end,
                rollover_cap=p.rollover_cap,
                discount_percent=p.discount_percent,
                active=p.active,
            )
            cols = (
                "display_name",
                "stripe_price_id",
                "allocations",
                "expire_at_period_end",
                "rollover_cap",
                "discount_percent",
                "active",
            )
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["id"], set_={c: stmt.excluded[c] for c in cols}
                )
            )

    write_transaction(engine, txn)


# --- quotes ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Quote:
    credit_type: str
    credits: int
    subtotal: int  # minor units, before the discount
    discount_percent: int
    discount: int  # minor units taken off: subtotal * discount_percent // 100
    amount: int  # minor units to pay: subtotal - discount
    currency: str
    breakdown: tuple[Step, ...]  # slab or pack steps, the discount (if any), the total
    plan_id: str | None = None  # the plan whose discount applies
    pack_id: str | None = None


def stripe_refusal(amount: int, currency: str) -> PricingError | None:
    """Why Stripe would refuse to charge `amount` (minor units) in `currency`, or None."""
    low = STRIPE_CHARGE_MINOR_MIN.get(currency, 1)
    if amount < low:
        return BelowMinimum(
            "amount",
            f"{amount} {currency} minor units is below Stripe's minimum charge of {low}",
            minimum=low,
        )
    if amount > STRIPE_AMOUNT_MINOR_MAX:
        return AboveMaximum(
            "amount",
            f"{amount} {currency} minor units is above Stripe's maximum amount of"
            f" {STRIPE_AMOUNT_MINOR_MAX}",
            maximum=STRIPE_AMOUNT_MINOR_MAX,
        )
    return None


def chargeable(quote: Quote) -> Quote:
    """`quote`, when Stripe would charge its amount (a plan's discount may take a small
    purchase below the minimum); else the PricingError, before any call to Stripe."""
    refusal = stripe_refusal(quote.amount, quote.currency)
    if refusal is not None:
        raise refusal
    return quote


def _credits(value: object) -> int:
    # bool is an int subclass: True must not buy one credit.
    if type(value) is not int or not 1 <= value <= CREDITS_MAX:
        raise PricingError("credits", f"must be an integer in [1, {CREDITS_MAX}]")
    return value


def _percent(value: object) -> int:
    if type(value) is not int or not 0 <= value <= PERCENT_MAX:
        raise PricingError("discount_percent", f"must be an integer in [0, {PERCENT_MAX}]")
    return value


def _slab_step(slab: Slab, credits: int) -> Step:
    return {
        "step": "slab",
        "from": slab.from_credits,
        "to": slab.to_credits,
        "credits": credits,
        "unit_amount": slab.unit_amount,
        "amount": credits * slab.unit_amount,
    }


def _slab_steps(table: PriceTable, credits: int) -> list[Step]:
    if table.mode == "volume":
        for slab in table.slabs:
            if slab.holds(credits):
                return [_slab_step(slab, credits)]
        raise AssertionError(f"no slab of {table.credit_type} holds {credits}")
    steps = []
    for slab in table.slabs:
        if slab.from_credits > credits:
            break
        top = credits if slab.to_credits is None else min(credits, slab.to_credits)
        steps.append(_slab_step(slab, top - slab.from_credits + 1))
    assert sum(int(s["credits"] or 0) for s in steps) == credits, (table, credits)
    return steps


def _finish(
    credit_type: str,
    credits: int,
    currency: str,
    steps: list[Step],
    percent: int,
    plan_id: str | None,
    pack_id: str | None = None,
) -> Quote:
    subtotal = sum(int(s["amount"] or 0) for s in steps)
    if subtotal > AMOUNT_MINOR_MAX:
        raise AboveMaximum("credits", f"the price would pass {AMOUNT_MINOR_MAX} minor units")
    discount = subtotal * percent // 100  # rounded down: never more than `percent` off
    amount = subtotal - discount
    assert 0 <= discount <= subtotal and 0 <= amount <= subtotal
    if discount:
        steps.append({"step": "discount", "plan": plan_id, "percent": percent, "amount": -discount})
    steps.append({"step": "total", "amount": amount})
    return Quote(
        credit_type=credit_type,
        credits=credits,
        subtotal=subtotal,
        discount_percent=percent,
        discount=discount,
        amount=amount,
        currency=currency,
        breakdown=tuple(steps),
        plan_id=plan_id,
        pack_id=pack_id,
    )


def price(
    table: PriceTable, credits: object, discount_percent: object = 0, plan_id: str | None = None
) -> Quote:
    """The quote of `credits` by the slabs of `table` (pure: no I/O)."""
    n = _credits(credits)
    percent = _percent(discount_percent)
    if n < table.min_credits:
        raise BelowMinimum(
            "credits",
            f"the minimum purchase of {table.credit_type} is {table.min_credits}",
            minimum=table.min_credits,
        )
    if n > table.max_credits:
        raise AboveMaximum(
            "credits",
            f"at most {table.max_credits} {table.credit_type} per purchase",
            maximum=table.max_credits,
        )
    steps = _slab_steps(table, n)
    return _finish(table.credit_type, n, table.currency, steps, percent, plan_id)


def price_pack(pack: Pack, discount_percent: object = 0, plan_id: str | None = None) -> Quote:
    """The quote of one pack (pure: no I/O)."""
    percent = _percent(discount_percent)
    step: Step = {"step": "pack", "pack": pack.id, "credits": pack.credits, "amount": pack.amount}
    return _finish(pack.credit_type, pack.credits, pack.currency, [step], percent, plan_id, pack.id)


def _discount(
    conn: Connection, discount_percent: int, plan_id: str | None, account_id: str | None
) -> tuple[int, str | None]:
    """(percent, plan id): a named plan's (it must be active), else the account's current
    plan's (active or retired), else `discount_percent` with no plan."""
    if discount_percent and (plan_id is not None or account_id is not None):
        raise ValueError("give discount_percent, or plan_id / account_id, not both")
    if plan_id is not None:
        return plan_discount(conn, plan_id), plan_id
    if account_id is not None:
        current = current_plan(conn, account_id)
        plan = get_plan(conn, current) if current is not None else None
        if current is not None and plan is None:
            log.warning("account %s subscribes to plan %r, which SQL lacks", account_id, current)
        return (plan.discount_percent, plan.id) if plan else (0, None)
    return discount_percent, None


def quote(
    conn_or_engine: Connection | Engine,
    credit_type: str,
    credits: int,
    *,
    discount_percent: int = 0,
    plan_id: str | None = None,
    account_id: str | None = None,
) -> Quote:
    """The price of `credits` of `credit_type` by its slabs, with the discount of `plan_id`
    (an active plan), else of `account_id`'s current plan, else `discount_percent`."""
    _credits(credits)
    _percent(discount_percent)
    with _reading(conn_or_engine) as conn:
        table = price_table(conn, credit_type)
        percent, plan = _discount(conn, discount_percent, plan_id, account_id)
    return price(table, credits, percent, plan)


def pack_quote(
    conn_or_engine: Connection | Engine,
    pack_id: str,
    *,
    discount_percent: int = 0,
    plan_id: str | None = None,
    account_id: str | None = None,
) -> Quote:
    """The price of an active pack, discounted as `quote` says."""
    _percent(discount_percent)
    with _reading(conn_or_engine) as conn:
        row = conn.execute(select(T_PACKS).where(T_PACKS.c.id == pack_id)).mappings().first()
        if row is None or not row["active"]:
            raise UnknownPack("pack_id", f"no active pack {pack_id!r}")
        percent, plan = _discount(conn, discount_percent, plan_id, account_id)
    return price_pack(_pack(row), percent, plan)
