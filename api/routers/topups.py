"""Auto top-up rules (issue 16 item 4), admin only: set one per wallet, read it with its last
attempts, disable it. Paying and granting live in sync/topups.py; the rules and attempts in
sync/topup_store.py."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api import changes
from api.auth import Principal, require
from api.errors import Problem, invalid
from api.schemas import AccountId, CreditType, Strict
from api.state import AppState, app_state
from meter import bounds
from meter.times import now_ms
from sync import accounts, pricing, thresholds, topup_attempts, topup_store

router = APIRouter(prefix="/v1/accounts/{account_id}/topup/{credit_type}", tags=["topups"])
State = Annotated[AppState, Depends(app_state)]
Admin = Annotated[Principal, Depends(require("admin"))]
DISABLED_BY_ADMIN = "disabled by an admin"


class TopupRuleIn(Strict):
    threshold: Annotated[int, Field(ge=thresholds.THRESHOLD_MIN, le=thresholds.THRESHOLD_MAX)] = (
        Field(description="top up when available credits drop below this")
    )
    credits: Annotated[int, Field(ge=1, le=bounds.CREDITS_MAX)] = Field(
        description="credits bought per top-up, priced as a quote of them"
    )
    daily_max: Annotated[int, Field(ge=1, le=topup_store.DAILY_MAX_MAX)] = Field(
        default=1, description="top-ups at most in any 24 h"
    )


class TopupAttemptOut(BaseModel):
    id: str
    crossing_id: str
    status: str
    credits: int | None
    amount_minor: int | None
    currency: str | None
    payment_intent_id: str | None
    error_code: str | None
    error: str | None
    created_at: str


class TopupRuleOut(BaseModel):
    account_id: str
    credit_type: str
    threshold: int
    credits: int
    daily_max: int
    enabled: bool
    consecutive_failures: int
    disabled_reason: str | None
    updated_at: str
    card_saved: bool
    attempts: list[TopupAttemptOut]


def _out(engine: Any, rule: topup_store.Rule) -> TopupRuleOut:
    attempts = topup_attempts.last_attempts(engine, rule.account_id, rule.credit_type)
    return TopupRuleOut(
        **rule.as_dict(),
        card_saved=topup_store.saved_card(engine, rule.account_id) is not None,
        attempts=[TopupAttemptOut(**a.as_dict()) for a in attempts],
    )


def _no_rule(account_id: str, credit_type: str) -> Problem:
    return Problem(
        404,
        f"no auto top-up rule for {account_id!r} {credit_type!r}",
        slug="topup-rule-not-found",
    )


@router.put("", response_model=TopupRuleOut, responses={404: {"description": "unknown account"}})
async def put_rule(
    account_id: AccountId, credit_type: CreditType, body: TopupRuleIn, state: State, who: Admin
) -> TopupRuleOut:
    """Sets the rule, enabled, its failures in a row back to 0, and the wallet's top-up
    threshold, which the charge scripts flag crossings of (sync.thresholds, kind topup).
    `credits` must be sold by the unit (a price table of the credit type) within Stripe's
    limits. The account's next checkout saves its card for the top-ups."""

    def save() -> topup_store.Rule:
        if not accounts.account_exists(state.engine, account_id):
            raise Problem(404, f"account {account_id!r} not found", slug="account-not-found")
        try:
            pricing.chargeable(
                pricing.quote(state.engine, credit_type, body.credits, account_id=account_id)
            )
        except pricing.PricingError as exc:
            where = "path" if exc.field == "credit_type" else "body"
            raise invalid(f"{where}.{exc.field}", str(exc)) from exc
        return topup_store.set_rule(
            state.engine,
            who.actor,
            account_id,
            credit_type,
            threshold=body.threshold,
            credits=body.credits,
            daily_max=body.daily_max,
            now_ms=now_ms(),
        )

    rule = await run_in_threadpool(save)
    await changes.set_thresholds(
        state, who.actor, account_id, "topup", {credit_type: rule.threshold}
    )
    return await run_in_threadpool(_out, state.engine, rule)


@router.get("", response_model=TopupRuleOut, responses={404: {"description": "no rule"}})
async def get_rule(
    account_id: AccountId,
    credit_type: CreditType,
    state: State,
    _: Annotated[Principal, Depends(require("read"))],
) -> TopupRuleOut:
    """The rule with its last attempts, newest first."""

    def run() -> TopupRuleOut:
        rule = topup_store.get_rule(state.engine, account_id, credit_type)
        if rule is None:
            raise _no_rule(account_id, credit_type)
        return _out(state.engine, rule)

    return await run_in_threadpool(run)


@router.delete("", status_code=204, responses={404: {"description": "no rule"}})
async def delete_rule(
    account_id: AccountId, credit_type: CreditType, state: State, who: Admin
) -> Response:
    """Disables the rule (kept with its attempts) and removes the wallet's top-up threshold;
    PUT enables it again."""
    rule = await run_in_threadpool(
        topup_store.disable_rule,
        state.engine,
        who.actor,
        account_id,
        credit_type,
        DISABLED_BY_ADMIN,
        now_ms(),
    )
    if rule is None:
        raise _no_rule(account_id, credit_type)
    await changes.set_thresholds(state, who.actor, account_id, "topup", {credit_type: None})
    return Response(status_code=204)
