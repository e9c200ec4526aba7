"""Reading outgoing webhook deliveries: what was sent where, its status and last answer.

The API, the CLI and the dashboard list them through here (sync/webhooks.py writes them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Engine, Row, select

from meter.times import rfc3339
from sync.models import T_WEBHOOK_DELIVERIES, T_WEBHOOK_ENDPOINTS, T_WEBHOOK_EVENTS

DELIVERIES_PAGE_MAX: Final = 500  # rows one listing returns, newest first


@dataclass(frozen=True)
class Delivery:
    id: str
    event_id: str
    event_type: str
    account_id: str | None
    endpoint_id: str
    url: str
    status: str
    attempts: int
    last_response_code: int | None
    last_error: str | None
    next_attempt_at_ms: int | None
    delivered_at_ms: int | None
    created_at_ms: int

    def as_dict(self) -> dict[str, Any]:
        """The API's and the CLI's JSON of a delivery."""
        return {
            "id": self.id,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "account_id": self.account_id,
            "endpoint_id": self.endpoint_id,
            "url": self.url,
            "status": self.status,
            "attempts": self.attempts,
            "last_response_code": self.last_response_code,
            "last_error": self.last_error,
            "next_attempt_at": _time(self.next_attempt_at_ms),
            "delivered_at": _time(self.delivered_at_ms),
            "created_at": rfc3339(self.created_at_ms),
        }


def _time(ms: int | None) -> str | None:
    return None if ms is None else rfc3339(ms)


def _deliveries_query() -> Any:
    d, e, t = T_WEBHOOK_DELIVERIES, T_WEBHOOK_EVENTS, T_WEBHOOK_ENDPOINTS
    return select(
        d, e.c.type.label("event_type"), e.c.account_id, t.c.url.label("url")
    ).select_from(d.join(e, d.c.event_id == e.c.id).join(t, d.c.endpoint_id == t.c.id))


def _delivery(row: Row[Any]) -> Delivery:
    return Delivery(
        id=row.id,
        event_id=row.event_id,
        event_type=row.event_type,
        account_id=row.account_id,
        endpoint_id=row.endpoint_id,
        url=row.url,
        status=row.status,
        attempts=row.attempts,
        last_response_code=row.last_response_code,
        last_error=row.last_error,
        next_attempt_at_ms=row.next_attempt_at_ms,
        delivered_at_ms=row.delivered_at_ms,
        created_at_ms=row.created_at_ms,
    )


def list_deliveries(
    engine: Engine,
    *,
    endpoint_id: str | None = None,
    status: str | None = None,
    limit: int = 100,
) -> list[Delivery]:
    """The newest deliveries first, of one endpoint and/or status when given."""
    d = T_WEBHOOK_DELIVERIES
    q = _deliveries_query()
    if endpoint_id is not None:
        q = q.where(d.c.endpoint_id == endpoint_id)
    if status is not None:
        q = q.where(d.c.status == status)
    q = q.order_by(d.c.created_at_ms.desc(), d.c.id.desc()).limit(
        max(1, min(limit, DELIVERIES_PAGE_MAX))
    )
    with engine.connect() as conn:
        return [_delivery(r) for r in conn.execute(q)]


def get_delivery(engine: Engine, delivery_id: str) -> Delivery | None:
    with engine.connect() as conn:
        row = conn.execute(
            _deliveries_query().where(T_WEBHOOK_DELIVERIES.c.id == delivery_id)
        ).first()
    return None if row is None else _delivery(row)
