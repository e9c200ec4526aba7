"""Dead letters: journal entries SQL refused for their own data (sync.flush), listed and
re-driven.

A retry writes one dead letter through the same writer as the flush, in a transaction of its
own, and deletes the row in that transaction: a retry that SQL still refuses keeps the row
with the new error. Ledger rows and hold events are keyed by their ids, so re-driving an
entry that reached SQL some other way inserts nothing and moves no balance.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import Engine, delete, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from meter.keys import Keys
from meter.times import now_ms
from meter.wire import JournalField as F
from meter.wire import WireFormatError, unpack_charge
from sync import limits
from sync.db import write_transaction
from sync.journal import LEDGER_KINDS, MalformedEntry, parse, unsortable
from sync.models import T_DEAD
from sync.writer import write_entries


@dataclass(frozen=True)
class DeadLetter:
    id: int
    journal: str
    stream_id: str  # Redis's own "ms-seq"
    entry_id: str | None  # None when the entry is too malformed to name one
    account_id: str | None
    credit_type: str | None
    kind: str | None
    amount: int | None
    error: str
    created_at_ms: int
    fields: dict[str, str]


@dataclass(frozen=True)
class RetryOutcome:
    dead_letter: DeadLetter
    ok: bool
    error: str | None  # SQL's (or the parser's) answer when still refused


def _int_or_none(text: str | None) -> int | None:
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


def _named(fields: dict[str, str]) -> dict[str, str]:
    """The entry's fields by name, a packed charge's spread (meter.wire.unpack_charge); a
    packed value that does not unpack names nothing."""
    try:
        return unpack_charge(fields)
    except WireFormatError:
        return {}


def _dead_letter(row: dict[str, object]) -> DeadLetter:
    try:
        fields = json.loads(str(row["fields"]))
    except ValueError:
        fields = {}
    if not isinstance(fields, dict):
        fields = {}
    named = _named(fields)
    return DeadLetter(
        id=int(str(row["id"])),
        journal=str(row["journal"]),
        stream_id=unsortable(str(row["stream_id"])),
        entry_id=named.get(F.ID),
        account_id=named.get(F.ACCOUNT),
        credit_type=named.get(F.CREDIT_TYPE),
        kind=named.get(F.KIND),
        amount=_int_or_none(named.get(F.AMOUNT)),
        error=str(row["error"]),
        created_at_ms=int(str(row["created_at_ms"])),
        fields=fields,
    )


def list_dead_letters(
    engine: Engine, keys: Keys, dead_letter_id: int | None = None
) -> list[DeadLetter]:
    """This deployment's dead letters (its journals' key prefix), oldest first."""
    query = select(T_DEAD).where(T_DEAD.c.journal.like(f"{keys.prefix}:%")).order_by(T_DEAD.c.id)
    if dead_letter_id is not None:
        query = query.where(T_DEAD.c.id == dead_letter_id)
    with engine.connect() as conn:
        return [_dead_letter(dict(r)) for r in conn.execute(query).mappings()]


def retry_dead_letters(
    engine: Engine, keys: Keys, dead_letter_id: int | None = None
) -> list[RetryOutcome]:
    """Re-drives one dead letter (by id) or all of this deployment's, each on its own."""
    buckets = {keys.journal(b): b for b in keys.all_buckets()}
    out = []
    for dead in list_dead_letters(engine, keys, dead_letter_id):
        bucket = buckets.get(dead.journal)
        error = (
            f"journal {dead.journal} is not one of this deployment's buckets"
            if bucket is None
            else _redrive(engine, bucket, dead)
        )
        if error is not None:
            _keep(engine, dead, error)
        out.append(RetryOutcome(dead, error is None, error))
    return out


def _redrive(engine: Engine, bucket: int, dead: DeadLetter) -> str | None:
    """Writes the entry and deletes its row in one transaction; the refusal, or None."""
    try:
        entry = parse(dead.stream_id, dead.fields)
    except MalformedEntry as exc:
        return f"malformed: {exc}"

    def write(conn: Connection) -> None:
        write_entries(conn, bucket, [entry], now_ms())
        conn.execute(delete(T_DEAD).where(T_DEAD.c.id == dead.id))

    try:
        write_transaction(engine, write)
    except DBAPIError as exc:
        return f"sql: {exc.orig!r}"
    return None


def _keep(engine: Engine, dead: DeadLetter, error: str) -> None:
    def record(conn: Connection) -> None:
        conn.execute(
            update(T_DEAD)
            .where(T_DEAD.c.id == dead.id)
            .values(error=error[: limits.DEAD_LETTER_ERROR_LEN_MAX])
        )

    write_transaction(engine, record)


def dead_letter_sums(engine: Engine, keys: Keys) -> dict[tuple[str, str], int]:
    """Per wallet, what its dead-lettered ledger entries add up to: the amount by which SQL
    trails Redis because of them."""
    sums: dict[tuple[str, str], int] = {}
    for dead in list_dead_letters(engine, keys):
        if dead.kind not in LEDGER_KINDS or dead.amount is None:
            continue
        if dead.account_id is None or dead.credit_type is None:
            continue
        wallet = (dead.account_id, dead.credit_type)
        sums[wallet] = sums.get(wallet, 0) + dead.amount
    return sums
