"""Outgoing webhook endpoints (issue 16 item 3), admin only: register one (its signing
secret is in the 201 answer and nowhere after), list them, delete one, read its deliveries.
The outbox, the sender and the retry schedule live in sync/webhooks*.py."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from starlette.concurrency import run_in_threadpool

from api.auth import Principal, require
from api.errors import Problem, invalid
from api.schemas import (
    WebhookDeliveryList,
    WebhookDeliveryOut,
    WebhookEndpointCreated,
    WebhookEndpointIn,
    WebhookEndpointList,
    WebhookEndpointOut,
    WebhookId,
    WebhookStatus,
)
from api.state import AppState, app_state
from sync import webhooks, webhooks_deliveries

router = APIRouter(prefix="/v1/webhook-endpoints", tags=["webhooks"])
State = Annotated[AppState, Depends(app_state)]
Admin = Annotated[Principal, Depends(require("admin"))]


def _not_found(endpoint_id: str) -> Problem:
    return Problem(
        404,
        f"no webhook endpoint {endpoint_id!r}",
        slug="webhook-endpoint-not-found",
        endpoint_id=endpoint_id,
    )


@router.post("", status_code=201, response_model=WebhookEndpointCreated)
async def create_endpoint(
    body: WebhookEndpointIn, state: State, who: Admin
) -> WebhookEndpointCreated:
    try:
        endpoint, secret = await run_in_threadpool(
            webhooks.create_endpoint, state.engine, who.actor, body.url, body.events
        )
    except webhooks.WebhookError as exc:
        raise invalid(exc.field, str(exc)) from exc
    return WebhookEndpointCreated(**endpoint.as_dict(), secret=secret)


@router.get("", response_model=WebhookEndpointList)
async def list_endpoints(state: State, _: Admin) -> WebhookEndpointList:
    endpoints = await run_in_threadpool(webhooks.list_endpoints, state.engine)
    return WebhookEndpointList(data=[WebhookEndpointOut(**e.as_dict()) for e in endpoints])


@router.delete("/{endpoint_id}", status_code=204)
async def delete_endpoint(endpoint_id: WebhookId, state: State, who: Admin) -> Response:
    deleted = await run_in_threadpool(
        webhooks.delete_endpoint, state.engine, who.actor, endpoint_id
    )
    if not deleted:
        raise _not_found(endpoint_id)
    return Response(status_code=204)


@router.get("/{endpoint_id}/deliveries", response_model=WebhookDeliveryList)
async def list_deliveries(
    endpoint_id: WebhookId,
    state: State,
    _: Admin,
    status: WebhookStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=webhooks_deliveries.DELIVERIES_PAGE_MAX)] = 100,
) -> WebhookDeliveryList:
    """The endpoint's deliveries, newest first (a deleted endpoint's too: its history)."""
    if not await run_in_threadpool(webhooks.endpoint_exists, state.engine, endpoint_id):
        raise _not_found(endpoint_id)
    deliveries = await run_in_threadpool(
        lambda: webhooks_deliveries.list_deliveries(
            state.engine, endpoint_id=endpoint_id, status=status, limit=limit
        )
    )
    return WebhookDeliveryList(data=[WebhookDeliveryOut(**d.as_dict()) for d in deliveries])
