"""Charging from your own FastAPI app: one dependency per paid route.

    from api.deps import charge

    @app.post("/generate", dependencies=[Depends(charge("IMAGE_GEN"))])
    async def generate(...): ...

The dependency charges the tool before the endpoint runs. When the account cannot pay it
answers 402 (403 for a switched-off tool, 404 for an unknown one) as problem+json itself,
and the endpoint never runs. When the endpoint raises, the charge is refunded in full and
the exception goes on. Declare it as a parameter (`paid: ChargeResult = Depends(charge(..))`)
to read what was charged.

Which account pays: `account=` (a function of the request, sync or async), by default the
`X-Account-Id` header. Which meter: `meter=`, else `app.state.meter` when the app set one,
else one AsyncMeter per process built from CREDITMETER_* settings (hydrating from SQL).
An `Idempotency-Key` request header is passed on, so a client's retry never pays twice.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from starlette.types import ExceptionHandler

from api import errors
from api.errors import Problem
from meter import AsyncMeter, validate
from meter.errors import InvalidArgument, MeterError
from meter.models import ChargeResult

ACCOUNT_HEADER = "X-Account-Id"
IDEMPOTENCY_HEADER = "Idempotency-Key"

AccountOf = Callable[[Request], str | Awaitable[str]]

_default_meter: AsyncMeter | None = None


def account_from_header(request: Request) -> str:
    account_id = request.headers.get(ACCOUNT_HEADER)
    if not account_id:
        raise Problem(401, f"the {ACCOUNT_HEADER} header names no account", slug="no-account")
    return account_id


def install(app: FastAPI) -> None:
    """Optional: registers the problem+json handlers up front (`charge` does it on first use)."""
    app.add_exception_handler(Problem, _problem_handler)


async def _problem_handler(request: Request, exc: Exception) -> Any:
    assert isinstance(exc, Problem), exc
    return errors.problem_response(exc)


def _ensure_problem_handler(request: Request) -> None:
    """Makes the app answer Problem as problem+json without any set-up by its author.

    Registered on the app for the middleware stacks it builds later, and in the running
    stack's table (Starlette reads it from the scope when the exception arrives)."""
    handler: ExceptionHandler = _problem_handler
    request.app.exception_handlers.setdefault(Problem, handler)
    running = request.scope.get("starlette.exception_handlers")
    if running is not None:
        running[0].setdefault(Problem, handler)


def _meter_for(request: Request, meter: AsyncMeter | None) -> AsyncMeter:
    global _default_meter
    if meter is not None:
        return meter
    app_meter = getattr(request.app.state, "meter", None)
    if isinstance(app_meter, AsyncMeter):
        return app_meter
    if _default_meter is None:
        from meter.connect import keys_from
        from sync.db import engine_for
        from sync.loader import SqlLoader
        from sync.settings import get_settings

        settings = get_settings()
        keys = keys_from(settings)
        loader = SqlLoader(engine_for(settings.database_url), keys)
        _default_meter = AsyncMeter.from_settings(settings, keys=keys, loader=loader)
    return _default_meter


def charge(
    tool: str,
    *,
    quantity: int = 1,
    account: AccountOf = account_from_header,
    meter: AsyncMeter | None = None,
) -> Callable[[Request], AsyncIterator[ChargeResult]]:
    """A FastAPI dependency that charges `tool` x `quantity` before the endpoint runs."""
    tool = validate.tool(tool)
    quantity = validate.quantity(quantity)

    async def charged(request: Request) -> AsyncIterator[ChargeResult]:
        _ensure_problem_handler(request)
        m = _meter_for(request, meter)
        account_id = account(request)
        if inspect.isawaitable(account_id):
            account_id = await account_id
        try:
            result = await m.charge(
                account_id,
                tool,
                quantity,
                idempotency_key=request.headers.get(IDEMPOTENCY_HEADER),
            )
        except InvalidArgument as exc:
            raise errors.invalid(exc.field, str(exc)) from exc
        except MeterError as exc:
            raise errors.from_meter_error(exc) from exc
        try:
            yield result
        except Exception:
            # The endpoint failed: give the credits back (idempotent per charge, so a retried
            # request that fails again cannot refund twice), then let the error go on.
            await m.refund(
                result.id, idempotency_key=f"refund-{result.id}", reason="endpoint failed"
            )
            raise

    return charged
