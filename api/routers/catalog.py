"""What credits cost (SPEC §7, §9): the packs on sale and quotes for any number of credits.

Thin: sync/pricing.py reads SQL and does the arithmetic; this module checks the query
and turns a PricingError into a 422 problem naming the query parameter at fault.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, BeforeValidator
from starlette.concurrency import run_in_threadpool

from api.auth import ReadKey
from api.errors import Problem, invalid
from api.state import AppState, app_state
from meter import bounds, validate
from sync import pricing

router = APIRouter(prefix="/v1", tags=["catalog"])
State = Annotated[AppState, Depends(app_state)]

DIGITS_RE = re.compile(rf"^[1-9][0-9]{{0,{len(str(bounds.CREDITS_MAX)) - 1}}}$")


def _digits(value: object) -> object:
    """Query strings are lax in pydantic ("10.0", "+10", "1_000" pass): digits only here."""
    if not isinstance(value, str) or not DIGITS_RE.fullmatch(value):
        raise ValueError("must be a positive integer written in digits, e.g. 1000")
    return value


QueryCredits = Annotated[
    int,
    Query(ge=1, le=bounds.CREDITS_MAX, description="how many credits, e.g. 1000"),
    BeforeValidator(_digits),
]
QueryCreditType = Annotated[str, Query(pattern=validate.CREDIT_TYPE_RE.pattern)]
QueryPlan = Annotated[
    str | None,
    Query(pattern=pricing.CATALOG_ID_RE.pattern, description="price with this plan's discount"),
]
QueryAccount = Annotated[
    str | None,
    Query(
        pattern=validate.ACCOUNT_RE.pattern,
        description="price with this account's current plan's discount (when plan is not given)",
    ),
]


class PackOut(BaseModel):
    id: str
    display_name: str
    credits: int
    credit_type: str
    amount: int  # minor units
    currency: str


class PackList(BaseModel):
    data: list[PackOut]


class QuoteOut(BaseModel):
    credit_type: str
    credits: int
    subtotal: int  # minor units, before the discount
    discount_percent: int
    discount: int  # minor units, rounded down
    amount: int  # minor units to pay
    currency: str
    plan: str | None  # the plan whose discount applies
    breakdown: list[dict[str, int | str | None]]


def _problem(exc: pricing.PricingError) -> Problem:
    # The fields of quote() are the query parameters' names, but for the amount, which
    # follows from the credits asked; the details (minimum, maximum) are what a client needs
    # to correct it.
    if exc.field == "amount":
        field, message = "credits", f"credits: their price, {exc.message}"
    else:
        field, message = exc.field, str(exc)
    details: dict[str, Any] = dict(exc.details)
    return invalid(f"query.{field}", message, kind=exc.code, slug=exc.code, **details)


@router.get("/packs", response_model=PackList)
async def list_packs(state: State, _: ReadKey) -> PackList:
    """The active packs, ordered by credit type, then credits."""
    packs = await run_in_threadpool(pricing.load_packs, state.engine)
    return PackList(
        data=[
            PackOut(
                id=p.id,
                display_name=p.display_name,
                credits=p.credits,
                credit_type=p.credit_type,
                amount=p.amount,
                currency=p.currency,
            )
            for p in packs
        ]
    )


@router.get("/prices/quote", response_model=QuoteOut)
async def get_quote(
    credit_type: QueryCreditType,
    credits: QueryCredits,
    state: State,
    _: ReadKey,
    plan: QueryPlan = None,
    account_id: QueryAccount = None,
) -> QuoteOut:
    """The price of `credits` by the credit type's slabs, less the plan's discount; refused
    as checkout would refuse it when Stripe could not charge the amount."""
    try:
        q = await run_in_threadpool(
            lambda: pricing.chargeable(
                pricing.quote(
                    state.engine, credit_type, credits, plan_id=plan, account_id=account_id
                )
            )
        )
    except pricing.PricingError as exc:
        raise _problem(exc) from exc
    return QuoteOut(
        credit_type=q.credit_type,
        credits=q.credits,
        subtotal=q.subtotal,
        discount_percent=q.discount_percent,
        discount=q.discount,
        amount=q.amount,
        currency=q.currency,
        plan=q.plan_id,
        breakdown=list(q.breakdown),
    )
