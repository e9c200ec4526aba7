"""Live balance events of one account as Server-Sent Events (GET /v1/accounts/{id}/events).

The scripts PUBLISH every balance or hold change on the bucket's events channel
(lua/includes/balance_event.lua); a stream SUBSCRIBEs to that channel on its own Redis
connection, keeps its account's messages and writes them as `balance` events:

    event: balance
    data: {"credit_type":"credits","available":90,"held":10,"balance":100,"entry_id":"..."}

Once the subscription is confirmed (and again whenever redis-py had to re-subscribe after a
lost connection, which may have missed messages) it sends the current state of every wallet,
with entry_id null, so a page shows numbers at once and no change falls between the read and
the subscription. An event read just before such a snapshot may repeat an older state right
after it; the next event (or snapshot) is always the latest.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import redis.exceptions
from fastapi import Request
from starlette.responses import StreamingResponse

from api.errors import Problem
from api.state import AppState
from meter import validate

log = logging.getLogger("creditmeter.api.sse")

PING_INTERVAL_S = 15.0  # proxies and load balancers drop a connection silent for 30-60 s
READ_TIMEOUT_S = 1.0  # one pub/sub read; bounds how late a client's disconnect is noticed
CLOSE_TIMEOUT_S = 2.0  # closing the pub/sub connection; a dead Redis must not hang cleanup
STREAM_S_MAX = 3600.0  # then the browser reconnects, and its token is checked again
RECONNECT_MS = 2000  # the `retry:` EventSource waits before reconnecting after an end
STREAMS_MAX = 1000  # per API process: each open stream holds one Redis connection
EVENT_FIELDS = ("credit_type", "available", "held", "balance", "entry_id")
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering
PING_FRAME = ": ping\n\n"

_open_streams = 0


def balance_stream(
    request: Request,
    state: AppState,
    account_id: str,
    *,
    ping_interval_s: float | None = None,
) -> StreamingResponse:
    """The SSE response streaming the account's balance events until the client leaves."""
    account_id = validate.account_id(account_id)
    if _open_streams >= STREAMS_MAX:
        raise Problem(503, "too many open event streams", headers={"Retry-After": "5"})
    interval_s = PING_INTERVAL_S if ping_interval_s is None else ping_interval_s
    return StreamingResponse(
        _frames(request, state, account_id, interval_s),
        media_type="text/event-stream",
        headers=HEADERS,
    )


def balance_frame(data: dict[str, Any]) -> str:
    out = {k: data.get(k) for k in EVENT_FIELDS}
    return f"event: balance\ndata: {json.dumps(out, separators=(',', ':'))}\n\n"


async def _snapshot(state: AppState, account_id: str) -> str:
    """One `balance` event per wallet of the account, as it is now."""
    result = await state.meter.balance(account_id)
    return "".join(
        balance_frame(
            {
                "credit_type": w.credit_type,
                "available": w.available,
                "held": w.held,
                "balance": w.balance,
                "entry_id": None,
            }
        )
        for w in result.wallets
    )


async def _frames(
    request: Request, state: AppState, account_id: str, ping_interval_s: float
) -> AsyncIterator[str]:
    global _open_streams
    keys = state.keys
    channel = keys.events(keys.bucket(account_id))
    # Messages start with the account (balance_event.lua): other accounts of the bucket are
    # skipped without parsing JSON.
    mine = ('{"account_id":' + json.dumps(account_id) + ",").encode()
    loop = asyncio.get_running_loop()
    end = loop.time() + STREAM_S_MAX
    pubsub = state.redis.pubsub()
    _open_streams += 1
    try:
        await pubsub.subscribe(channel)
        yield f"retry: {RECONNECT_MS}\n\n"
        last_write = loop.time()
        while loop.time() < end:
            if await request.is_disconnected():
                return
            wait_s = min(READ_TIMEOUT_S, max(0.0, last_write + ping_interval_s - loop.time()))
            msg = await pubsub.get_message(timeout=wait_s)
            frame = ""
            if msg is None:
                pass
            elif msg["type"] == "subscribe":
                frame = await _snapshot(state, account_id)
            elif msg["type"] == "message" and msg["data"].startswith(mine):
                frame = balance_frame(json.loads(msg["data"]))
            if not frame and loop.time() - last_write >= ping_interval_s:
                frame = PING_FRAME
            if frame:
                yield frame
                last_write = loop.time()
    except redis.exceptions.RedisError as exc:
        # Redis is gone after redis-py's retries: end the stream; EventSource reconnects in
        # RECONNECT_MS and starts again from a fresh snapshot.
        log.warning("event stream of %s ends: %r", account_id, exc)
    finally:
        # Runs on a clean end, a disconnect (starlette cancels the stream: CancelledError) and
        # a failure alike; shielded, since a cancelled scope would cancel the close as well.
        _open_streams -= 1
        with anyio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
            await pubsub.aclose()
