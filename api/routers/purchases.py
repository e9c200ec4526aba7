"""Buying credits (SPEC §7, §9): Stripe Checkout Sessions, and the Stripe webhook.

The webhook only verifies, stores and enqueues: the event is applied by a worker job
(worker/stripe_jobs.py), so Stripe gets its 200 within milliseconds and a slow or failing
application is retried by us, not redelivered by Stripe.
"""

from __future__ import annotations

import json
import logging
import uuid
from functools import cache
from typing import Annotated, Any

import redis
import stripe
from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from api.auth import Principal, require
from api.errors import Problem, invalid
from api.idempotency import optional_idempotency_key, run_idempotent
from api.schemas import CheckoutIn, CheckoutOut, WebhookOut
from api.state import AppState, app_state
from meter.redis_conn import sync_client
from sync import limits, pricing, stripe_api
from sync.purchases import UNAPPLIED_EVENT_STATUSES, EventError, event_status, store_event
from sync.queues import enqueue_stripe_event

router = APIRouter(tags=["purchases"])
State = Annotated[AppState, Depends(app_state)]
Meter = Annotated[Principal, Depends(require("meter"))]
OptionalKey = Annotated[str | None, Depends(optional_idempotency_key)]
log = logging.getLogger("creditmeter.api")


@router.post("/v1/checkout/sessions", status_code=201, response_model=CheckoutOut)
async def create_checkout_session(
    body: CheckoutIn,
    request: Request,
    response: Response,
    state: State,
    who: Meter,
    key: OptionalKey,
) -> Any:
    if key is None:
        return await run_in_threadpool(_checkout, state, body, uuid.uuid4().hex)

    # A client's Idempotency-Key makes its retry return the same session (Stripe replays
    # it); the same key with another body is refused here, before any call to Stripe.
    async def run() -> tuple[stripe_api.Checkout, bool]:
        return await run_in_threadpool(_checkout, state, body, key), False

    return await run_idempotent(state, request, response, key, body, run)


def _checkout(state: AppState, body: CheckoutIn, request_key: str) -> stripe_api.Checkout:
    try:
        client = stripe_api.client_for(state.settings)
        if body.plan_id is not None:
            return stripe_api.checkout_plan(
                state.engine,
                client,
                account_id=body.account_id,
                plan_id=body.plan_id,
                success_url=body.success_url,
                cancel_url=body.cancel_url,
                request_key=request_key,
            )
        if body.pack_id is not None:
            quote = pricing.pack_quote(state.engine, body.pack_id, account_id=body.account_id)
        else:
            assert body.credit_type is not None and body.credits is not None  # CheckoutIn
            quote = pricing.quote(
                state.engine, body.credit_type, body.credits, account_id=body.account_id
            )
        return stripe_api.checkout_credits(
            state.engine,
            client,
            account_id=body.account_id,
            quote=pricing.chargeable(quote),
            pack_id=body.pack_id,
            success_url=body.success_url,
            cancel_url=body.cancel_url,
            request_key=request_key,
        )
    except pricing.PricingError as exc:
        raise invalid(f"body.{exc.field}", str(exc)) from exc
    except stripe_api.StripeIdempotencyReused as exc:
        raise Problem(422, str(exc), slug="idempotency-key-reused") from exc
    except stripe_api.StripeRefused as exc:
        # Permanent: Stripe's message says what to change; retrying the same body cannot help.
        raise Problem(
            422, str(exc), slug="stripe-refused", stripe_code=exc.code, stripe_param=exc.param
        ) from exc
    except stripe_api.StripeNotConfigured as exc:
        raise Problem(503, str(exc), slug="stripe-not-configured") from exc
    except stripe_api.StripeUnavailable as exc:
        raise Problem(502, str(exc), slug="stripe-unavailable") from exc


@router.post("/v1/webhooks/stripe", response_model=WebhookOut)
async def stripe_webhook(request: Request, state: State) -> Any:
    secret = state.settings.stripe_webhook_secret
    if not secret:
        raise Problem(
            503, "CREDITMETER_STRIPE_WEBHOOK_SECRET is not set", slug="stripe-not-configured"
        )
    payload = await request.body()
    try:
        text = payload.decode()
    except UnicodeDecodeError as exc:
        log.warning("stripe webhook refused: the body is not UTF-8 (%s)", exc.reason)
        raise Problem(400, "not a Stripe event: the body is not UTF-8", slug="bad-event") from None
    try:
        # v1 signatures only (v0 is ignored), any one of several may match, and the signed
        # timestamp must be within the tolerance.
        stripe.WebhookSignature.verify_header(
            text,
            request.headers.get("stripe-signature"),
            secret,
            tolerance=limits.STRIPE_WEBHOOK_TOLERANCE_S,
        )
    except stripe.SignatureVerificationError as exc:
        raise Problem(400, f"Stripe-Signature: {exc}", slug="bad-signature") from exc
    try:
        event = json.loads(text)
        if not isinstance(event, dict):
            raise ValueError("not a JSON object")
        new = await run_in_threadpool(_store_and_enqueue, state, event, text)
    except (ValueError, EventError) as exc:  # JSONDecodeError too
        raise Problem(400, f"not a Stripe event: {exc}", slug="bad-event") from exc
    except RecursionError:  # deeper than the parser goes: no Stripe event nests like that
        raise Problem(400, "not a Stripe event: nested too deeply", slug="bad-event") from None
    return {"received": True, "duplicate": not new}


def _store_and_enqueue(state: AppState, event: dict[str, Any], text: str) -> bool:
    """Stores the event (False: it was already stored) and makes sure a job will apply it:
    a delivery that finds it stored but not applied enqueues again if no job exists, so an
    enqueue lost to a Redis blip is redone by Stripe's redelivery."""
    new = store_event(state.engine, event, text)
    if new or event_status(state.engine, event["id"]) in UNAPPLIED_EVENT_STATUSES:
        queue_url = state.settings.effective_queue_redis_url() or state.redis_url
        enqueue_stripe_event(_queue_client(queue_url), state.keys, event["id"])
    return new


@cache
def _queue_client(url: str) -> redis.Redis:
    """One sync client per process for RQ (its API is synchronous)."""
    return sync_client(url)
