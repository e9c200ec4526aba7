"""The dashboard's Webhooks page: the endpoints, their recent deliveries (status, attempts,
last answer) and a Resend button per delivery. Resend (a CSRF-checked form, audited) puts
the delivery back to pending, due now, and enqueues its job: the worker sends it."""

from __future__ import annotations

from typing import Annotated, Any, Final
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from api.admin.render import page
from api.admin.session import PageSession, PostedForm
from api.schemas import WebhookId, WebhookStatus
from api.state import AppState, app_state, queue_redis
from meter.times import now_ms
from sync import audit, webhooks, webhooks_deliveries
from sync.queues import enqueue_webhook_delivery
from sync.webhooks_send import make_due

router = APIRouter(prefix="/admin/webhooks", include_in_schema=False)
State = Annotated[AppState, Depends(app_state)]

DELIVERIES_SHOWN: Final = 50  # the newest; the CLI and the API list more


def _page_data(state: AppState, status: str | None) -> dict[str, Any]:
    return {
        "endpoints": webhooks.list_endpoints(state.engine),
        "deliveries": webhooks_deliveries.list_deliveries(
            state.engine, status=status, limit=DELIVERIES_SHOWN
        ),
    }


@router.get("")
async def webhooks_page(
    request: Request,
    state: State,
    session: PageSession,
    status: Annotated[WebhookStatus | None, Query()] = None,
    resent: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    data = await run_in_threadpool(_page_data, state, status)
    return page(request, "admin/webhooks.html", session, status=status, resent=resent, **data)


def _resend(state: AppState, actor: str, delivery_id: str) -> bool:
    try:
        delivery = make_due(state.engine, delivery_id, now_ms())
    except webhooks.WebhookError:
        return False
    with queue_redis(state) as client:
        enqueue_webhook_delivery(client, state.keys, delivery.id, delivery.attempts)
    audit.record(state.engine, actor, "webhook_delivery.resend", delivery.id, {})
    return True


@router.post("/deliveries/{delivery_id}/resend")
async def resend(
    delivery_id: WebhookId, request: Request, state: State, posted: PostedForm
) -> Response:
    if not await run_in_threadpool(_resend, state, posted.session.actor, delivery_id):
        data = await run_in_threadpool(_page_data, state, None)
        return page(
            request,
            "admin/webhooks.html",
            posted.session,
            status_code=404,
            error=f"no webhook delivery {delivery_id!r}",
            status=None,
            resent=None,
            **data,
        )
    return RedirectResponse(f"/admin/webhooks?resent={quote(delivery_id)}", status_code=303)
