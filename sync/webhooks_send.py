"""Sending a webhook delivery: claim it, POST it signed per Standard Webhooks, record it.

A delivery is claimed in SQL before it is sent (its next attempt moved a lease ahead), so
two jobs for the same delivery never both send it; a sender killed mid-attempt frees it when
the lease ends, and the next sweep sends it again with the same `webhook-id` (receivers
deduplicate on it, as the spec asks). A 2xx answer is success; anything else, or no answer
within SEND_TIMEOUT_S, is retried after the next delay of the schedule, then failed.

One slow or dead receiver must not hold up the others (the sweep's jobs share a queue): a
sweep takes at most DUE_PER_ENDPOINT_MAX deliveries per endpoint, round robin across
endpoints, and an attempt that gets no answer at all (timeout, refused) defers the
endpoint's other due deliveries to its own retry, without counting an attempt for them, so a
dead endpoint costs one timeout per step of the schedule, not one per delivery.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import httpx
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import Connection
from standardwebhooks.webhooks import Webhook

from meter.times import rfc3339
from sync.db import write_transaction
from sync.models import T_WEBHOOK_DELIVERIES, T_WEBHOOK_ENDPOINTS, T_WEBHOOK_EVENTS
from sync.webhooks import WebhookError
from sync.webhooks_deliveries import Delivery, get_delivery

# Delays before the 2nd, 3rd, ... attempt: the Standard Webhooks / Svix schedule. A blip is
# retried within seconds, a deploy within the hour, a receiver down for a day still gets
# it: eight attempts over about 27.6 hours, then the delivery is failed (and re-sendable).
RETRY_DELAYS_S: Final = (5, 300, 1_800, 7_200, 18_000, 36_000, 36_000)
SEND_TIMEOUT_S: Final = 10.0  # one POST; a slow receiver is retried like a down one
CLAIM_LEASE_MS: Final = 60_000  # a claimed delivery whose sender died is sent again after this
DUE_BATCH_MAX: Final = 500  # deliveries one sweep enqueues; the next sweep takes the rest
DUE_PER_ENDPOINT_MAX: Final = 50  # of those per endpoint: a backlog of one leaves room for all
ERROR_LEN_MAX: Final = 500  # error text kept per delivery: one readable line
USER_AGENT: Final = "creditmeter-webhooks/1"


@dataclass(frozen=True)
class Message:
    """What one attempt sends: the event's body and where, with which secret."""

    delivery_id: str
    event_id: str
    url: str
    secret: str
    body: str
    active: bool


def body_of(event_type: str, created_at_ms: int, account_id: str | None, payload: str) -> str:
    """The Standard Webhooks payload shape: type, timestamp, data (the same on every
    attempt, so a receiver can compare bodies of one webhook-id)."""
    data = {"account_id": account_id, **json.loads(payload)}
    document = {"type": event_type, "timestamp": rfc3339(created_at_ms), "data": data}
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


def signed_headers(secret: str, msg_id: str, timestamp_s: int, body: str) -> dict[str, str]:
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(timestamp_s, UTC), body)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp_s),
        "webhook-signature": signature,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


def due(engine: Engine, now_ms: int, limit: int = DUE_BATCH_MAX) -> list[tuple[str, int]]:
    """(id, attempts so far) of the pending deliveries whose next attempt is due: each
    endpoint's longest waiting first, taken in turns across endpoints, at most
    DUE_PER_ENDPOINT_MAX of one endpoint."""
    d = T_WEBHOOK_DELIVERIES
    turn = (
        func.row_number()
        .over(partition_by=d.c.endpoint_id, order_by=(d.c.next_attempt_at_ms, d.c.id))
        .label("turn")
    )
    ranked = (
        select(d.c.id, d.c.attempts, d.c.next_attempt_at_ms, turn)
        .where(d.c.status == "pending", d.c.next_attempt_at_ms <= now_ms)
        .subquery()
    )
    q = (
        select(ranked.c.id, ranked.c.attempts)
        .where(ranked.c.turn <= DUE_PER_ENDPOINT_MAX)
        .order_by(ranked.c.turn, ranked.c.next_attempt_at_ms, ranked.c.id)
        .limit(limit)
    )
    with engine.connect() as conn:
        return [(row.id, row.attempts) for row in conn.execute(q)]


def _claim(conn: Connection, delivery_id: str, now_ms: int) -> Message | None:
    d, e, t = T_WEBHOOK_DELIVERIES, T_WEBHOOK_EVENTS, T_WEBHOOK_ENDPOINTS
    claimed = conn.execute(
        d.update()
        .where(d.c.id == delivery_id, d.c.status == "pending", d.c.next_attempt_at_ms <= now_ms)
        .values(next_attempt_at_ms=now_ms + CLAIM_LEASE_MS)
    )
    if claimed.rowcount != 1:
        return None
    row = conn.execute(
        select(e.c.id, e.c.type, e.c.created_at_ms, e.c.account_id, e.c.payload)
        .add_columns(t.c.url, t.c.secret, t.c.active)
        .select_from(d.join(e, d.c.event_id == e.c.id).join(t, d.c.endpoint_id == t.c.id))
        .where(d.c.id == delivery_id)
    ).one()
    return Message(
        delivery_id=delivery_id,
        event_id=row.id,
        url=row.url,
        secret=row.secret,
        body=body_of(row.type, row.created_at_ms, row.account_id, row.payload),
        active=bool(row.active),
    )


def _record(
    conn: Connection,
    delivery_id: str,
    now_ms: int,
    code: int | None,
    error: str | None,
    delays_s: Sequence[int],
) -> None:
    d = T_WEBHOOK_DELIVERIES
    attempts, endpoint_id = conn.execute(
        select(d.c.attempts, d.c.endpoint_id).where(d.c.id == delivery_id)
    ).one()
    attempts += 1
    values: dict[str, object] = {
        "attempts": attempts,
        "last_response_code": code,
        "last_error": None if error is None else error[:ERROR_LEN_MAX],
    }
    if error is None:
        values.update(status="succeeded", delivered_at_ms=now_ms, next_attempt_at_ms=None)
    elif attempts <= len(delays_s):
        retry_at_ms = now_ms + delays_s[attempts - 1] * 1000
        values.update(status="pending", next_attempt_at_ms=retry_at_ms)
        if code is None:  # no answer at all: the endpoint's others wait for this retry
            conn.execute(
                d.update()
                .where(
                    d.c.endpoint_id == endpoint_id,
                    d.c.id != delivery_id,
                    d.c.status == "pending",
                    d.c.next_attempt_at_ms < retry_at_ms,
                )
                .values(next_attempt_at_ms=retry_at_ms)
            )
    else:
        values.update(status="failed", next_attempt_at_ms=None)
    conn.execute(d.update().where(d.c.id == delivery_id).values(**values))


def _post(message: Message, http: httpx.Client) -> tuple[int | None, str | None]:
    """(response code, error): error None means delivered."""
    if not message.active:
        return None, "endpoint deleted"
    headers = signed_headers(message.secret, message.event_id, int(time.time()), message.body)
    try:
        response = http.post(message.url, content=message.body.encode(), headers=headers)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:  # InvalidURL is not an HTTPError
        return None, f"{type(exc).__name__}: {exc}"
    if 200 <= response.status_code < 300:
        return response.status_code, None
    return response.status_code, f"HTTP {response.status_code}: {response.text[:200]}"


def deliver(
    engine: Engine,
    delivery_id: str,
    now_ms: int,
    *,
    delays_s: Sequence[int] = RETRY_DELAYS_S,
    http: httpx.Client | None = None,
) -> Delivery | None:
    """One attempt of a due delivery, recorded; None when it is not due or another sender
    holds it. `now_ms` schedules the retry (the signature carries the real time)."""
    message = write_transaction(engine, lambda conn: _claim(conn, delivery_id, now_ms))
    if message is None:
        return None
    if http is None:
        with httpx.Client(timeout=SEND_TIMEOUT_S, follow_redirects=False) as own:
            code, error = _post(message, own)
    else:
        code, error = _post(message, http)
    retry_delays_s = delays_s if message.active else ()  # a deleted endpoint: failed now
    write_transaction(
        engine, lambda conn: _record(conn, delivery_id, now_ms, code, error, retry_delays_s)
    )
    return get_delivery(engine, delivery_id)


def make_due(engine: Engine, delivery_id: str, now_ms: int) -> Delivery:
    """Puts a delivery back to pending, due now, whatever its state: `resend`. Its attempts
    keep counting, so a failed delivery resent gets one more attempt, not a new schedule."""
    d = T_WEBHOOK_DELIVERIES

    def write(conn: Connection) -> int:
        return conn.execute(
            d.update()
            .where(d.c.id == delivery_id)
            .values(status="pending", next_attempt_at_ms=now_ms)
        ).rowcount

    if write_transaction(engine, write) != 1:
        raise WebhookError("delivery_id", f"no webhook delivery {delivery_id!r}")
    delivery = get_delivery(engine, delivery_id)
    assert delivery is not None
    return delivery
