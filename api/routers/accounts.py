"""Account routes (SPEC §7): settings (status, overdraft limit, email, metadata), grants and
adjustments (admin), balance, ledger entries from SQL, short-lived account tokens and the
live balance stream (SSE)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse

from api import changes, sse, tokens
from api.auth import Principal, account_reader, require
from api.errors import Problem, invalid
from api.idempotency import idempotency_key, run_idempotent
from api.schemas import (
    AccountId,
    AccountOut,
    AccountPatchIn,
    AdjustmentIn,
    AdjustmentOut,
    BalanceOut,
    CreditType,
    EntryOut,
    EntryPage,
    GrantIn,
    GrantInfoOut,
    GrantOut,
    TokenIn,
    TokenOut,
    WalletOut,
)
from api.state import AppState, app_state
from meter.times import now_ms, parse_rfc3339_ms, rfc3339
from sync import accounts, entries, thresholds

router = APIRouter(prefix="/v1/accounts/{account_id}", tags=["accounts"])
State = Annotated[AppState, Depends(app_state)]
Key = Annotated[str, Depends(idempotency_key)]
Admin = Annotated[Principal, Depends(require("admin"))]


async def _account_out(state: AppState, a: accounts.AccountSettings) -> AccountOut:
    low = await run_in_threadpool(thresholds.get_thresholds, state.engine, a.id, "low")
    return AccountOut(
        id=a.id,
        status="suspended" if a.status == "suspended" else "active",
        overdraft_limit=a.overdraft_limit,
        email=a.email,
        metadata=a.metadata,
        created_at=rfc3339(a.created_at_ms),
        low_balance_thresholds=low,
    )


def _not_found(account_id: str) -> Problem:
    return Problem(404, f"account {account_id!r} not found", slug="account-not-found")


@router.get("", response_model=AccountOut, responses={404: {"description": "unknown account"}})
async def get_account(
    account_id: AccountId, state: State, _: Annotated[Principal, Depends(require("read"))]
) -> AccountOut:
    """The account's settings from SQL; an account never touched is 404 (not created)."""
    found = await run_in_threadpool(accounts.get_settings, state.engine, account_id)
    if found is None:
        raise _not_found(account_id)
    return await _account_out(state, found)


@router.patch("", response_model=AccountOut, responses={404: {"description": "unknown account"}})
async def patch_account(
    account_id: AccountId, body: AccountPatchIn, state: State, who: Admin
) -> AccountOut:
    """Changes the fields given; status and overdraft_limit are in force for the account's
    next charge or hold when this answers. Suspended: charges and holds are 403
    account-suspended; refunds, grants, adjustments, settling or releasing holds opened
    before, and reads go on (money owed to or by the account still moves).
    low_balance_thresholds are in force for the account's next change too."""
    fields = body.model_dump(exclude_unset=True)
    saved = await changes.patch_account(state, who.actor, account_id, fields)
    if saved is None:
        raise _not_found(account_id)
    return await _account_out(state, saved)


@router.post("/grants", status_code=201, response_model=GrantOut)
async def create_grant(
    account_id: AccountId,
    body: GrantIn,
    request: Request,
    response: Response,
    state: State,
    key: Key,
    who: Admin,
) -> Any:
    expires_at_ms = parse_rfc3339_ms(body.expires_at) if body.expires_at else None
    if expires_at_ms is not None and expires_at_ms <= now_ms():
        raise invalid("body.expires_at", "in the past", detail="expires_at must be in the future")

    async def run() -> tuple[GrantOut, bool]:
        r = await state.meter.grant(
            account_id,
            body.credit_type,
            body.amount,
            category=body.category,
            priority=body.priority,
            expires_at_ms=expires_at_ms,
            source="admin",
            reference_id=body.reference_id,
            idempotency_key=key,
            description=body.reason,
            metadata=body.metadata,
        )
        if not r.replayed:
            detail = body.model_dump(exclude_none=True)
            await changes.audit_entry(state, who.actor, "account.grant", account_id, r.id, detail)
        out = GrantOut(
            id=r.id,
            grant_id=r.grant_id,
            account_id=account_id,
            credit_type=body.credit_type,
            amount=r.amount,
            balance=r.balance,
            available=r.available,
        )
        return out, r.replayed

    return await run_idempotent(state, request, response, key, body, run)


@router.post("/adjustments", status_code=201, response_model=AdjustmentOut)
async def create_adjustment(
    account_id: AccountId,
    body: AdjustmentIn,
    request: Request,
    response: Response,
    state: State,
    key: Key,
    who: Admin,
) -> Any:
    async def run() -> tuple[AdjustmentOut, bool]:
        r = await changes.adjust(state, who.actor, account_id, body, key)
        out = AdjustmentOut(
            id=r.id,
            account_id=account_id,
            credit_type=body.credit_type,
            amount=r.amount,
            balance=r.balance,
            available=r.available,
        )
        return out, r.replayed

    return await run_idempotent(state, request, response, key, body, run)


@router.get("/balance", response_model=BalanceOut)
async def get_balance(
    account_id: AccountId,
    state: State,
    _: Annotated[Principal, Depends(account_reader)],
) -> BalanceOut:
    b = await state.meter.balance(account_id)
    return BalanceOut(
        account_id=account_id,
        balances=[
            WalletOut(
                credit_type=w.credit_type, available=w.available, held=w.held, balance=w.balance
            )
            for w in b.wallets
        ],
        grants=[
            GrantInfoOut(
                id=g.id,
                credit_type=w.credit_type,
                remaining=g.remaining,
                category=g.category,
                priority=g.priority,
                expires_at=rfc3339(g.expires_at_ms) if g.expires_at_ms else None,
            )
            for w in b.wallets
            for g in w.grants
        ],
    )


@router.get("/entries", response_model=EntryPage)
async def list_entries(
    account_id: AccountId,
    state: State,
    _: Annotated[Principal, Depends(require("read"))],
    credit_type: CreditType | None = None,
    limit: Annotated[int, Query(ge=1, le=entries.PAGE_LIMIT_MAX)] = entries.PAGE_LIMIT_DEFAULT,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> EntryPage:
    try:
        page = await run_in_threadpool(
            entries.account_entries,
            state.engine,
            account_id,
            credit_type=credit_type,
            limit=limit,
            cursor=cursor,
        )
    except entries.BadCursor as exc:
        raise invalid("query.cursor", str(exc)) from exc
    return EntryPage(data=[_entry(r) for r in page.rows], next_cursor=page.next_cursor)


def _entry(r: dict[str, Any]) -> EntryOut:
    return EntryOut(
        id=r["id"],
        account_id=r["account_id"],
        credit_type=r["credit_type"],
        kind=r["kind"],
        amount=r["amount"],
        balance_after=r["balance_after"],
        tool=r["tool"] or None,
        quantity=r["quantity"],
        hold_id=r["hold_id"] or None,
        idempotency_key=r["idempotency_key"] or None,
        reference_id=r["reference_id"] or None,
        description=r["description"] or None,
        metadata=json.loads(r["metadata"]) if r["metadata"] else None,
        created_at=rfc3339(r["created_at_ms"]),
    )


@router.post("/tokens", status_code=201, response_model=TokenOut)
async def create_token(
    account_id: AccountId,
    state: State,
    _: Annotated[Principal, Depends(require("meter"))],
    body: TokenIn | None = None,
) -> TokenOut:
    ttl_s = (body.ttl_seconds if body else None) or tokens.TOKEN_TTL_S_DEFAULT
    token, expires_at_ms = tokens.issue_token(state.secret_key, account_id, ttl_s)
    return TokenOut(token=token, account_id=account_id, expires_at=rfc3339(expires_at_ms))


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "balance events"}},
)
async def balance_events(
    account_id: AccountId,
    request: Request,
    state: State,
    _: Annotated[Principal, Depends(account_reader)],
) -> StreamingResponse:
    return sse.balance_stream(request, state, account_id)
