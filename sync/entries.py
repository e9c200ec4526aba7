"""An account's ledger entries from SQL, newest first, in keyset-paginated pages."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, and_, or_, select

from sync.models import T_LEDGER

PAGE_LIMIT_DEFAULT = 50
PAGE_LIMIT_MAX = 500  # one page is one indexed range read; bigger pages only cost memory


class BadCursor(ValueError):
    """The cursor was not made by this module (or was edited)."""


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    next_cursor: str | None


def _encode(created_at_ms: int, entry_id: str) -> str:
    raw = json.dumps([created_at_ms, entry_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at_ms, entry_id = json.loads(raw)
    except (ValueError, TypeError) as exc:
        raise BadCursor("cursor is not one this API returned") from exc
    if type(created_at_ms) is not int or not isinstance(entry_id, str):
        raise BadCursor("cursor is not one this API returned")
    return created_at_ms, entry_id


def entry_in_ledger(engine: Engine, entry_id: str) -> bool:
    """Whether the flush has written this journal entry's ledger row yet."""
    with engine.connect() as conn:
        found = conn.execute(select(T_LEDGER.c.id).where(T_LEDGER.c.id == entry_id)).first()
    return found is not None


def account_entries(
    engine: Engine,
    account_id: str,
    *,
    credit_type: str | None = None,
    limit: int = PAGE_LIMIT_DEFAULT,
    cursor: str | None = None,
) -> Page:
    assert 1 <= limit <= PAGE_LIMIT_MAX, limit
    c = T_LEDGER.c
    query = select(T_LEDGER).where(c.account_id == account_id)
    if credit_type is not None:
        query = query.where(c.credit_type == credit_type)
    if cursor is not None:
        at_ms, entry_id = _decode(cursor)
        query = query.where(
            or_(c.created_at_ms < at_ms, and_(c.created_at_ms == at_ms, c.id < entry_id))
        )
    query = query.order_by(c.created_at_ms.desc(), c.id.desc()).limit(limit + 1)
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if more else None
    return Page(rows, _encode(last["created_at_ms"], last["id"]) if last else None)
