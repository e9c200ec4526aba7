"""The webhook producers the flush feeds, from journal entries SQL just took in:
balance.low and balance.depleted (the flags a script put on the entry whose change crossed
a threshold, lua/includes/crossings.lua: detected once per crossing, atomically with it) and
hold.expired (a hold_expire entry, from the expiry sweep or a script that found the hold
expired). sync/writer.write_entries calls `emit_entry_events` in its transaction with the
entries that were new there; the dedupe keys ("<entry id>:balance.low", "<entry id>:
balance.depleted", "<hold id>:hold.expired") make a replayed flush add nothing anyway.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy.engine import Connection

from meter.times import rfc3339
from meter.wire import Alert
from sync.journal import Entry
from sync.webhooks import emit, subscribed_types

BALANCE_EVENTS = {Alert.LOW: "balance.low", Alert.DEPLETED: "balance.depleted"}
HOLD_EXPIRED = "hold.expired"


def dedupe_key(subject_id: str, event_type: str) -> str:
    return f"{subject_id}:{event_type}"


def _events(entry: Entry) -> Iterable[tuple[str, str, dict[str, Any]]]:
    """(type, dedupe subject, payload) of each event the entry announces."""
    if entry.alerts:
        for flag, event_type in BALANCE_EVENTS.items():
            if flag in entry.alerts.flags:
                payload: dict[str, Any] = {
                    "credit_type": entry.credit_type,
                    "available": entry.alerts.available,
                    "entry_id": entry.id,
                    "entry_kind": entry.kind,
                }
                if flag is Alert.LOW:
                    payload["threshold"] = entry.alerts.low_threshold
                yield event_type, entry.id, payload
    if entry.kind == "hold_expire":
        payload = {
            "hold_id": entry.id,
            "credit_type": entry.credit_type,
            "amount": entry.amount,
            "expired_at": rfc3339(entry.ts_ms),
        }
        yield HOLD_EXPIRED, entry.id, payload


def emit_entry_events(conn: Connection, fresh: list[Entry]) -> int:
    """Emits the events of the entries this write took in -> how many were new. No read at
    all when none announces anything (most flushes), one when nobody listens to them."""
    found = [(e.account_id, event) for e in fresh for event in _events(e)]
    if not found:
        return 0
    wanted = subscribed_types(conn)
    emitted = 0
    for account_id, (event_type, subject, payload) in found:
        if event_type in wanted:
            key = dedupe_key(subject, event_type)
            if emit(conn, event_type, account_id, payload, key):
                emitted += 1
    return emitted


def topup_crossings(fresh: list[Entry]) -> list[tuple[str, str, str]]:
    """(entry id, account id, credit type) of the entries that crossed a top-up threshold."""
    return [
        (e.id, e.account_id, e.credit_type)
        for e in fresh
        if e.alerts and Alert.TOPUP in e.alerts.flags
    ]
