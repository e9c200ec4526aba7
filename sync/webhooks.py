"""Outgoing webhooks, the outbox: endpoints, events and their deliveries in SQL.

A producer calls `emit` inside the SQL transaction that records the fact it announces, so
the event commits (or rolls back) with the fact. Each event has a `dedupe_key` naming the
fact ("<entry id>:balance.low", "<stripe event id>:purchase.completed", "<grant id>:
expiring"); emitting it again, from a replayed flush or a redelivered Stripe event, adds
nothing. `emit` also writes one pending delivery per active endpoint subscribed to the
type; the worker's due sweep sends them (sync/webhooks_send.py), signed per Standard
Webhooks, with retries.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
from sqlalchemy import Engine, Row, select
from sqlalchemy.engine import Connection

from meter.ids import new_id
from meter.times import now_ms as clock_ms
from meter.times import rfc3339
from sync import audit
from sync.db import write_transaction
from sync.models import T_WEBHOOK_DELIVERIES, T_WEBHOOK_ENDPOINTS, T_WEBHOOK_EVENTS
from sync.sqlops import insert_ignore

EVENT_TYPES: Final = (
    "balance.low",
    "balance.depleted",
    "grant.expiring",
    "purchase.completed",
    "refund.applied",
    "hold.expired",
    "topup.failed",  # an auto top-up's payment failed (sync/topup_store.py)
)
STATUSES: Final = ("pending", "succeeded", "failed")
SECRET_PREFIX: Final = "whsec_"  # Standard Webhooks: whsec_ then the base64 key
SECRET_BYTES: Final = 32  # an HMAC-SHA256 key as long as its output (the spec asks 24-64)
URL_LEN_MAX: Final = 2_048  # the url column; longer URLs are refused, never cut
ENDPOINTS_MAX: Final = 100  # active endpoints: bounds the deliveries one emit writes
DEDUPE_KEY_LEN_MAX: Final = 255  # the dedupe_key column


class WebhookError(ValueError):
    """A bad endpoint or delivery request; `field` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Endpoint:
    id: str
    url: str
    events: tuple[str, ...]
    active: bool
    created_at_ms: int

    def as_dict(self) -> dict[str, Any]:
        """The API's and the CLI's JSON of an endpoint (never its secret)."""
        return {
            "id": self.id,
            "url": self.url,
            "events": list(self.events),
            "active": self.active,
            "created_at": rfc3339(self.created_at_ms),
        }


def check_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  raises on a port that is not a number in 0-65535
    except ValueError as exc:  # "http://]x": an unclosed IPv6 bracket, or a bad port
        raise WebhookError("url", f"is not a valid URL ({exc})") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookError("url", "must be an http:// or https:// URL with a host")
    try:
        httpx.URL(url)  # what the sender will parse: refused now, not on every attempt
    except httpx.InvalidURL as exc:
        raise WebhookError("url", f"is not a valid URL ({exc})") from exc
    if len(url) > URL_LEN_MAX or any(c.isspace() for c in url):
        raise WebhookError("url", f"must be at most {URL_LEN_MAX} characters, no spaces")
    return url


def check_events(events: Iterable[str]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(events))  # order kept, duplicates dropped
    unknown = [e for e in chosen if e not in EVENT_TYPES]
    if unknown or not chosen:
        raise WebhookError("events", f"must be one or more of {', '.join(EVENT_TYPES)}")
    return chosen


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _endpoint(row: Row[Any]) -> Endpoint:
    return Endpoint(
        id=row.id,
        url=row.url,
        events=tuple(json.loads(row.events)),
        active=bool(row.active),
        created_at_ms=row.created_at_ms,
    )


def create_endpoint(
    engine: Engine, actor: str, url: str, events: Sequence[str]
) -> tuple[Endpoint, str]:
    """The new endpoint and its signing secret: the only time the secret is handed out."""
    endpoint = Endpoint(
        id="ep_" + new_id(0),
        url=check_url(url),
        events=check_events(events),
        active=True,
        created_at_ms=clock_ms(),
    )
    secret = new_secret()

    def write(conn: Connection) -> None:
        active = conn.execute(
            select(T_WEBHOOK_ENDPOINTS.c.id)
            .where(T_WEBHOOK_ENDPOINTS.c.active)
            .limit(ENDPOINTS_MAX)
        ).all()
        if len(active) >= ENDPOINTS_MAX:
            raise WebhookError("url", f"at most {ENDPOINTS_MAX} active endpoints; delete one")
        conn.execute(
            T_WEBHOOK_ENDPOINTS.insert(),
            {
                "id": endpoint.id,
                "url": endpoint.url,
                "events": json.dumps(list(endpoint.events)),
                "secret": secret,
                "active": True,
                "created_at_ms": endpoint.created_at_ms,
            },
        )
        detail = {"url": endpoint.url, "events": list(endpoint.events)}
        audit.record_in(conn, actor, "webhook_endpoint.create", endpoint.id, detail)

    write_transaction(engine, write)
    return endpoint, secret


def list_endpoints(engine: Engine) -> list[Endpoint]:
    """The active endpoints, oldest first (a deleted one keeps its deliveries' history)."""
    t = T_WEBHOOK_ENDPOINTS
    with engine.connect() as conn:
        rows = conn.execute(select(t).where(t.c.active).order_by(t.c.created_at_ms, t.c.id))
        return [_endpoint(r) for r in rows]


def delete_endpoint(engine: Engine, actor: str, endpoint_id: str) -> bool:
    """Deactivates it and fails its pending deliveries; False when no active one has the id."""
    t, d = T_WEBHOOK_ENDPOINTS, T_WEBHOOK_DELIVERIES

    def write(conn: Connection) -> bool:
        done = conn.execute(
            t.update().where(t.c.id == endpoint_id, t.c.active).values(active=False)
        )
        if done.rowcount != 1:
            return False
        conn.execute(
            d.update()
            .where(d.c.endpoint_id == endpoint_id, d.c.status == "pending")
            .values(status="failed", last_error="endpoint deleted", next_attempt_at_ms=None)
        )
        audit.record_in(conn, actor, "webhook_endpoint.delete", endpoint_id, {})
        return True

    return write_transaction(engine, write)


def emit(
    conn: Connection,
    type: str,
    account_id: str | None,
    payload: dict[str, Any],
    dedupe_key: str,
    *,
    now_ms: int | None = None,
) -> str | None:
    """Records one event in the caller's transaction; returns its id, or None when an event
    with this dedupe_key exists already (nothing is written then).

    `type` is one of EVENT_TYPES; `payload` is JSON-serialisable and becomes the event's
    `data` (with `account_id` added); `dedupe_key` names the fact, unique across types, so
    the same fact emitted twice sends once. One pending delivery is written for every
    active endpoint subscribed to `type`, due at once: the worker's sweep (every
    WEBHOOK_SWEEP_INTERVAL_S) sends it. Commit or roll back the transaction as usual: the
    event goes with it."""
    if type not in EVENT_TYPES:
        raise WebhookError("type", f"unknown webhook event type {type!r}")
    if not 0 < len(dedupe_key) <= DEDUPE_KEY_LEN_MAX:
        raise WebhookError("dedupe_key", f"must be 1-{DEDUPE_KEY_LEN_MAX} characters")
    at_ms = clock_ms() if now_ms is None else now_ms
    event_id = "msg_" + new_id(0, at_ms)
    # RETURNING, not rowcount: psycopg reports -1 for an INSERT ... ON CONFLICT DO NOTHING.
    inserted = conn.execute(
        insert_ignore(conn, T_WEBHOOK_EVENTS).returning(T_WEBHOOK_EVENTS.c.id),
        {
            "id": event_id,
            "type": type,
            "account_id": account_id,
            "payload": json.dumps(payload, sort_keys=True, separators=(",", ":")),
            "dedupe_key": dedupe_key,
            "created_at_ms": at_ms,
        },
    )
    if inserted.first() is None:
        return None
    t = T_WEBHOOK_ENDPOINTS
    endpoints = conn.execute(
        select(t.c.id, t.c.events).where(t.c.active).limit(ENDPOINTS_MAX)
    ).all()
    rows = [
        {
            "id": "dlv_" + new_id(0, at_ms),
            "event_id": event_id,
            "endpoint_id": ep.id,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at_ms": at_ms,
            "created_at_ms": at_ms,
        }
        for ep in endpoints
        if type in json.loads(ep.events)
    ]
    if rows:
        conn.execute(T_WEBHOOK_DELIVERIES.insert(), rows)
    return event_id


def subscribed_types(conn: Connection) -> set[str]:
    """The event types some active endpoint listens to: a producer with none of its types
    among them skips its work (one small read of at most ENDPOINTS_MAX rows)."""
    t = T_WEBHOOK_ENDPOINTS
    rows = conn.scalars(select(t.c.events).where(t.c.active).limit(ENDPOINTS_MAX))
    return {event for events in rows for event in json.loads(events)}


def endpoint_exists(engine: Engine, endpoint_id: str) -> bool:
    t = T_WEBHOOK_ENDPOINTS
    with engine.connect() as conn:
        return conn.execute(select(t.c.id).where(t.c.id == endpoint_id)).first() is not None
