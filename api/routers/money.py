"""Charges, holds and refunds (SPEC §7): thin routes over the async meter.

Every route here changes money, so each needs an Idempotency-Key (api.idempotency) that it
passes to the script as the operation's own idempotency key. The one exception is a charge's
dry run ("dry_run": true), which changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel

from api import metrics
from api.auth import Principal, require
from api.errors import rate_limit_headers
from api.idempotency import idempotency_key, optional_idempotency_key, run_idempotent
from api.schemas import (
    ChargeCheckOut,
    ChargeIn,
    ChargeOut,
    EntityId,
    ExtendIn,
    ExtendOut,
    HoldIn,
    HoldOut,
    RefundIn,
    RefundOut,
    ReleaseOut,
    SettleIn,
    SettleOut,
)
from api.state import AppState, app_state, get_state
from meter import errors as me
from meter.models import RateLimitState
from meter.times import rfc3339

router = APIRouter(prefix="/v1", tags=["charging"])
JSON = "application/json"
State = Annotated[AppState, Depends(app_state)]
Key = Annotated[str, Depends(idempotency_key)]
OptionalKey = Annotated[str | None, Depends(optional_idempotency_key)]
Meter = Annotated[Principal, Depends(require("meter"))]


@contextmanager
def _unmade_id_is_not_found(kind: str, record_id: str) -> Iterator[None]:
    """An id this deployment never made (meter.ids.bucket_of cannot read it) names nothing:
    404 like any unknown hold or charge, not a 422 about a field called "id"."""
    try:
        yield
    except me.InvalidArgument as exc:
        if exc.field != "id":
            raise
        missing = me.HoldNotFound(record_id) if kind == "hold" else me.ChargeNotFound(record_id)
        raise missing from exc


_CHARGE_OUTCOMES: dict[type[me.MeterError], str] = {
    me.InsufficientCredits: "insufficient",
    me.UnknownTool: "unknown_tool",
    me.ToolDisabled: "tool_disabled",
    me.RateLimited: "rate_limited",
    me.AccountSuspended: "account_suspended",
}


@router.post(
    "/charges",
    status_code=201,
    response_model=ChargeOut | ChargeCheckOut,
    responses={200: {"model": ChargeCheckOut, "description": "dry_run: the check's answer"}},
)
async def create_charge(
    body: ChargeIn, request: Request, response: Response, key: OptionalKey, _: Meter
) -> Any:
    # The hot route: the state straight from the app (a dependency costs a resolution per
    # request) and the answer rendered here, once (see _rendered).
    state = get_state(request)
    if body.dry_run:
        # Writes nothing, so needs no Idempotency-Key; one sent is neither checked nor stored.
        response.status_code = 200
        return await _check_charge(state, body, response)
    key = await idempotency_key(key)  # None: the same 400 as every other money route

    async def run() -> tuple[ChargeOut, bool]:
        try:
            r = await state.meter.charge(
                body.account_id,
                body.tool,
                body.quantity,
                idempotency_key=key,
                description=body.description,
                metadata=body.metadata,
            )
        except me.MeterError as exc:
            metrics.record_charge(body.tool, _CHARGE_OUTCOMES.get(type(exc), "error"))
            raise
        metrics.record_charge(body.tool, "replayed" if r.replayed else "charged")
        if r.rate_limit is not None:
            _rate_headers(response, r.rate_limit)
        out = ChargeOut(
            id=r.id,
            account_id=r.account_id,
            tool=r.tool,
            credit_type=r.credit_type,
            amount=r.amount,
            balance=r.balance,
            available=r.available,
        )
        return out, r.replayed

    answer = await run_idempotent(state, request, response, key, body, run)
    return _rendered(answer, response, 201)


def _rendered(answer: Any, response: Response, status: int) -> Response:
    """The route's model as JSON bytes, serialized once by pydantic's core. Returned as a
    model, FastAPI would validate it again against response_model before dumping it; the
    OpenAPI document still comes from response_model. A stored answer (a replayed refusal)
    is already a response."""
    if isinstance(answer, Response):
        return answer
    assert isinstance(answer, BaseModel), answer
    rendered = Response(answer.model_dump_json(), status_code=status, media_type=JSON)
    rendered.headers.raw.extend(response.headers.raw)  # as FastAPI merges them
    return rendered


def _rate_headers(response: Response, rate: RateLimitState) -> None:
    """The rate limit in force on the charge, as the 429 would name it."""
    response.headers.update(rate_limit_headers(rate.limit, rate.remaining, rate.reset_ms))


async def _check_charge(state: AppState, body: ChargeIn, response: Response) -> ChargeCheckOut:
    c = await state.meter.charge(
        body.account_id,
        body.tool,
        body.quantity,
        description=body.description,
        metadata=body.metadata,
        dry_run=True,
    )
    if c.rate_limit is not None:
        _rate_headers(response, c.rate_limit)
    return ChargeCheckOut(
        would_succeed=c.would_succeed,
        account_id=c.account_id,
        tool=c.tool,
        credit_type=c.credit_type,
        amount=c.amount,
        balance=c.balance,
        available=c.available,
        reason=c.reason,
    )


@router.post("/holds", status_code=201, response_model=HoldOut)
async def create_hold(
    body: HoldIn, request: Request, response: Response, state: State, key: Key, _: Meter
) -> Any:
    async def run() -> tuple[HoldOut, bool]:
        h = await state.meter.hold(
            body.account_id,
            body.tool,
            quantity=body.quantity if body.quantity is not None else 1,
            amount=body.amount,
            ttl_s=body.ttl_seconds,
            idempotency_key=key,
        )
        r = h.result
        out = HoldOut(
            id=r.id,
            account_id=r.account_id,
            tool=r.tool,
            amount=r.amount,
            credit_type=r.credit_type,
            expires_at=rfc3339(r.expires_at_ms),
            balance=r.balance,
            available=r.available,
        )
        return out, r.replayed

    return await run_idempotent(state, request, response, key, body, run)


@router.post("/holds/{hold_id}/settle", response_model=SettleOut)
async def settle_hold(
    hold_id: EntityId,
    request: Request,
    response: Response,
    state: State,
    key: Key,
    _: Meter,
    body: SettleIn | None = None,
) -> Any:
    body = body or SettleIn()

    async def run() -> tuple[SettleOut, bool]:
        with _unmade_id_is_not_found("hold", hold_id):
            r = await state.meter.settle(
                hold_id,
                body.amount,
                idempotency_key=key,
                description=body.description,
                metadata=body.metadata,
            )
        out = SettleOut(
            entry_id=r.entry_id,
            hold_id=r.hold_id,
            charged=r.charged,
            released=r.released,
            balance=r.balance,
            available=r.available,
        )
        return out, r.replayed

    return await run_idempotent(state, request, response, key, body, run)


@router.post("/holds/{hold_id}/release", response_model=ReleaseOut)
async def release_hold(
    hold_id: EntityId, request: Request, response: Response, state: State, key: Key, _: Meter
) -> Any:
    async def run() -> tuple[ReleaseOut, bool]:
        with _unmade_id_is_not_found("hold", hold_id):
            r = await state.meter.release(hold_id, idempotency_key=key)
        out = ReleaseOut(
            hold_id=r.hold_id, released=r.released, balance=r.balance, available=r.available
        )
        return out, r.replayed

    return await run_idempotent(state, request, response, key, None, run)


@router.post("/holds/{hold_id}/extend", response_model=ExtendOut)
async def extend_hold(
    hold_id: EntityId,
    body: ExtendIn,
    state: State,
    _: Meter,
    key: Annotated[str | None, Depends(optional_idempotency_key)],
) -> Any:
    """A heartbeat moves no credits, so its Idempotency-Key is optional."""
    with _unmade_id_is_not_found("hold", hold_id):
        r = await state.meter.extend(hold_id, body.ttl_seconds, idempotency_key=key)
    return ExtendOut(hold_id=r.hold_id, expires_at=rfc3339(r.expires_at_ms))


@router.post("/refunds", status_code=201, response_model=RefundOut)
async def create_refund(
    body: RefundIn, request: Request, response: Response, state: State, key: Key, _: Meter
) -> Any:
    async def run() -> tuple[RefundOut, bool]:
        with _unmade_id_is_not_found("charge", body.charge_id):
            r = await state.meter.refund(
                body.charge_id,
                body.amount,
                reason=body.reason,
                idempotency_key=key,
                metadata=body.metadata,
            )
        out = RefundOut(
            id=r.id,
            charge_id=r.charge_id,
            amount=r.amount,
            balance=r.balance,
            available=r.available,
            refunded_total=r.refunded_total,
        )
        return out, r.replayed

    return await run_idempotent(state, request, response, key, body, run)
