"""Live balance events of one account as Server-Sent Events (GET /v1/accounts/{id}/events).

The scripts PUBLISH every balance or hold change on the bucket's events channel
(lua/includes/balance_event.lua). Every stream of a process shares one pub/sub connection
(api.pubsub.EventHub), which hands each stream the messages of its account; a stream writes
them as `balance` events:

    event: balance
    data: {"credit_type":"credits","available":90,"held":10,"balance":100,"entry_id":"..."}

Once its channel's subscription is confirmed (and again whenever redis-py had to re-subscribe
after a lost connection, which may have missed messages) it sends the current state of every
wallet, with entry_id null, so a page shows numbers at once and no change falls between the
read and the subscription. An event that arrives while such a snapshot is read may repeat an
older state right after it; the next event (or snapshot) is always the latest.

A stream ends after STREAM_S_MAX, when the client leaves, when it falls QUEUE_ITEMS_MAX events
behind, and when the pub/sub connection fails: EventSource reconnects after RECONNECT_MS.
A process serves STREAMS_MAX streams, an account STREAMS_PER_ACCOUNT_MAX of them (429 past it).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import redis.exceptions
from fastapi import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from api import pubsub
from api.errors import Problem
from api.state import AppState
from meter import validate

log = logging.getLogger("creditmeter.api.sse")

PING_INTERVAL_S = 15.0  # proxies and load balancers drop a connection silent for 30-60 s
READ_TIMEOUT_S = 1.0  # one wait for an event; bounds how late a client's disconnect is noticed
STREAM_S_MAX = 3600.0  # then the browser reconnects, and its token is checked again
RECONNECT_MS = 2000  # the `retry:` EventSource waits before reconnecting after an end
STREAMS_MAX = 1000  # per API process: each open stream holds a socket and a send buffer
STREAMS_FULL_RETRY_AFTER_S = 5
# Per account and API process: a few pages or tabs of one user. One end user with an account
# token must not take the streams (and the CPU of their snapshots) of everybody else.
STREAMS_PER_ACCOUNT_MAX = 5
ACCOUNT_FULL_RETRY_AFTER_S = 30  # a slot frees only when one of the account's streams ends
EVENT_FIELDS = ("credit_type", "available", "held", "balance", "entry_id")
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering
PING_FRAME = ": ping\n\n"

_open_streams = 0
_streams_of: Counter[str] = Counter()  # open streams per account in this process


class _Slot:
    """A stream's place in the process's counts, taken before the response starts (so that
    concurrent requests cannot pass the limits together) and given back exactly once."""

    def __init__(self, account_id: str) -> None:
        global _open_streams
        self.account_id = account_id
        self.held = True
        _open_streams += 1
        _streams_of[account_id] += 1

    def release(self) -> None:
        global _open_streams
        if self.held:
            self.held = False
            _open_streams -= 1
            _streams_of[self.account_id] -= 1
            if _streams_of[self.account_id] <= 0:
                del _streams_of[self.account_id]


class _EventStreamResponse(StreamingResponse):
    """Gives the slot back however the response ends, also when it never started to stream
    (a client gone before the first byte: the body generator is then never run)."""

    def __init__(self, content: AsyncIterator[str], slot: _Slot) -> None:
        super().__init__(content, media_type="text/event-stream", headers=HEADERS)
        self.slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slot.release()


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
        raise Problem(
            503,
            "too many open event streams",
            headers={"Retry-After": str(STREAMS_FULL_RETRY_AFTER_S)},
        )
    if _streams_of[account_id] >= STREAMS_PER_ACCOUNT_MAX:
        raise Problem(
            429,
            f"this account has {STREAMS_PER_ACCOUNT_MAX} open event streams; close one first",
            slug="too-many-event-streams",
            headers={"Retry-After": str(ACCOUNT_FULL_RETRY_AFTER_S)},
            streams_max=STREAMS_PER_ACCOUNT_MAX,
        )
    interval_s = PING_INTERVAL_S if ping_interval_s is None else ping_interval_s
    slot = _Slot(account_id)
    return _EventStreamResponse(_frames(request, state, account_id, interval_s, slot), slot)


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


async def _next_item(queue: asyncio.Queue[pubsub.Item], wait_s: float) -> pubsub.Item | None:
    try:
        async with asyncio.timeout(wait_s):
            return await queue.get()
    except TimeoutError:
        return None


async def _frames(
    request: Request, state: AppState, account_id: str, ping_interval_s: float, slot: _Slot
) -> AsyncIterator[str]:
    keys = state.keys
    loop = asyncio.get_running_loop()
    end = loop.time() + STREAM_S_MAX
    hub = pubsub.hub_for(state.redis)
    listener = hub.join(keys.events(keys.bucket(account_id)), account_id)
    try:
        yield f"retry: {RECONNECT_MS}\n\n"
        last_write = loop.time()
        while loop.time() < end:
            if await request.is_disconnected():
                return
            wait_s = min(READ_TIMEOUT_S, max(0.0, last_write + ping_interval_s - loop.time()))
            item = await _next_item(listener.queue, wait_s)
            frame = ""
            if item == pubsub.END:
                log.info("event stream of %s ends: too far behind or pub/sub lost", account_id)
                return
            if isinstance(item, pubsub.Snapshot):
                frame = await hub.read_snapshot(
                    account_id, item, lambda: _snapshot(state, account_id)
                )
            elif isinstance(item, dict):
                frame = balance_frame(item)
            if not frame and loop.time() - last_write >= ping_interval_s:
                frame = PING_FRAME
            if frame:
                yield frame
                last_write = loop.time()
    except redis.exceptions.RedisError as exc:
        # The snapshot's read failed after redis-py's retries: end the stream; EventSource
        # reconnects in RECONNECT_MS and starts again from a fresh snapshot.
        log.warning("event stream of %s ends: %r", account_id, exc)
    finally:
        # Runs on a clean end, a disconnect (starlette cancels the stream: CancelledError) and
        # a failure alike; nothing here awaits, so a cancelled scope cannot skip it.
        hub.leave(listener)
        slot.release()
