"""Auto top-up attempts in SQL (issue 16 item 4): one per threshold crossing, its id the
Stripe idempotency key; their outcome, the topup.failed alert and the rule disabled after
too many failures in a row.

How "at most once per crossing, at most daily_max a day" holds: `claim` runs in one
transaction that first updates the rule's row (on PostgreSQL that locks it, on SQLite the
write lock is the database's), then counts the attempts of the last 24 h and inserts the new
one, whose id is derived from the crossing. Two claims of one wallet run one after the
other; a crossing claimed twice finds its attempt.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Connection, Engine, func, select, update

from meter.times import rfc3339
from sync import audit, webhooks
from sync.db import write_transaction
from sync.models import T_TOPUP_ATTEMPTS, T_TOPUP_RULES
from sync.topup_store import TopupError, read_rule

DAY_MS: Final = 86_400_000  # the window of daily_max
FAILURES_TO_DISABLE: Final = 3  # issue 16: three failed top-ups in a row disable the rule
ATTEMPTS_SHOWN: Final = 10  # the last attempts the API, the CLI and the dashboard show
CROSSING_ID_LEN_MAX: Final = 255  # the crossing_id column
ERROR_TEXT_LEN_MAX: Final = 1_000  # Stripe's messages are a sentence or two
SYSTEM_ACTOR: Final = "system"  # the audit actor of a rule disabled by its failures
STATUSES: Final = ("pending", "processing", "succeeded", "failed")
RESCUE_AFTER_MS: Final = 60_000  # a claimed attempt's job starts within seconds
RESCUE_WITHIN_MS: Final = 3_600_000  # past an hour the crossing is history: left pending, shown
RESCUE_BATCH_MAX: Final = 100  # attempts one sweep enqueues at most


@dataclass(frozen=True)
class Attempt:
    id: str
    account_id: str
    credit_type: str
    crossing_id: str
    status: str
    credits: int | None
    amount_minor: int | None
    currency: str | None
    payment_intent_id: str | None
    error_code: str | None
    error: str | None
    created_at_ms: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "crossing_id": self.crossing_id,
            "status": self.status,
            "credits": self.credits,
            "amount_minor": self.amount_minor,
            "currency": self.currency,
            "payment_intent_id": self.payment_intent_id,
            "error_code": self.error_code,
            "error": self.error,
            "created_at": rfc3339(self.created_at_ms),
        }


def attempt_id(account_id: str, credit_type: str, crossing_id: str) -> str:
    """The attempt of a crossing, and its Stripe idempotency key: the same for every caller."""
    digest = hashlib.sha256(f"{account_id}\x1f{credit_type}\x1f{crossing_id}".encode())
    return "topup_" + digest.hexdigest()[:40]


def _attempt(row: Any) -> Attempt:
    return Attempt(
        id=row.id,
        account_id=row.account_id,
        credit_type=row.credit_type,
        crossing_id=row.crossing_id,
        status=row.status,
        credits=row.credits,
        amount_minor=row.amount_minor,
        currency=row.currency,
        payment_intent_id=row.payment_intent_id,
        error_code=row.error_code,
        error=row.error,
        created_at_ms=row.created_at_ms,
    )


def read_attempt(conn: Connection, aid: str) -> Attempt | None:
    row = conn.execute(select(T_TOPUP_ATTEMPTS).where(T_TOPUP_ATTEMPTS.c.id == aid)).first()
    return None if row is None else _attempt(row)


def get_attempt(engine: Engine, aid: str) -> Attempt | None:
    with engine.connect() as conn:
        return read_attempt(conn, aid)


def last_attempts(
    engine: Engine, account_id: str, credit_type: str, limit: int = ATTEMPTS_SHOWN
) -> list[Attempt]:
    a = T_TOPUP_ATTEMPTS.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(T_TOPUP_ATTEMPTS)
            .where(a.account_id == account_id, a.credit_type == credit_type)
            .order_by(a.created_at_ms.desc(), a.id)
            .limit(limit)
        ).all()
    return [_attempt(row) for row in rows]


def claim(
    engine: Engine, account_id: str, credit_type: str, crossing_id: str, now_ms: int
) -> tuple[str | None, str]:
    """claim_in, in a transaction of its own."""
    return write_transaction(
        engine, lambda conn: claim_in(conn, account_id, credit_type, crossing_id, now_ms)
    )


def claim_crossings(
    conn: Connection, crossings: list[tuple[str, str, str]], now_ms: int
) -> list[str]:
    """The attempts to run for (entry id, account, credit type) crossings, claimed in the
    caller's transaction: the flush's, so a crossing it commits has its attempt committed
    with it (a worker killed before enqueueing leaves a pending attempt, rescue_pending's)."""
    claimed = [claim_in(conn, acct, ct, entry_id, now_ms)[0] for entry_id, acct, ct in crossings]
    return [aid for aid in claimed if aid is not None]


def claim_in(
    conn: Connection, account_id: str, credit_type: str, crossing_id: str, now_ms: int
) -> tuple[str | None, str]:
    """(the attempt to run, why): a new pending attempt for this crossing, or the crossing's
    attempt when it is still pending (its job may have been lost: the job is safe to run
    twice); (None, why) when there is no enabled rule, the crossing was topped up already,
    or daily_max attempts were made in the last 24 h."""
    if not 0 < len(crossing_id) <= CROSSING_ID_LEN_MAX:
        raise TopupError("crossing_id", f"must be 1-{CROSSING_ID_LEN_MAX} characters")
    aid = attempt_id(account_id, credit_type, crossing_id)
    r, a = T_TOPUP_RULES.c, T_TOPUP_ATTEMPTS.c
    # The lock that serialises claims of one wallet: an update of its rule's row.
    locked = conn.execute(
        update(T_TOPUP_RULES)
        .where(r.account_id == account_id, r.credit_type == credit_type, r.enabled)
        .values(updated_at_ms=r.updated_at_ms)
    )
    if locked.rowcount != 1:
        return None, "no enabled top-up rule"
    known = read_attempt(conn, aid)
    if known is not None:
        return (aid, "pending") if known.status == "pending" else (None, known.status)
    rule = read_rule(conn, account_id, credit_type)
    assert rule is not None
    today = conn.execute(
        select(func.count()).where(
            a.account_id == account_id,
            a.credit_type == credit_type,
            a.created_at_ms > now_ms - DAY_MS,
        )
    ).scalar_one()
    if today >= rule.daily_max:
        return None, f"daily_max: {today} top-ups in the last 24 h"
    conn.execute(
        T_TOPUP_ATTEMPTS.insert(),
        {
            "id": aid,
            "account_id": account_id,
            "credit_type": credit_type,
            "crossing_id": crossing_id,
            "status": "pending",
            "created_at_ms": now_ms,
            "updated_at_ms": now_ms,
        },
    )
    return aid, "claimed"


def stale_pending(engine: Engine, now_ms: int) -> list[str]:
    """Attempts claimed between RESCUE_WITHIN_MS and RESCUE_AFTER_MS ago and still pending:
    their job was lost (an enqueue that failed after the claim committed) or gave up
    (Stripe unreachable through all its retries). Oldest first, at most RESCUE_BATCH_MAX."""
    a = T_TOPUP_ATTEMPTS.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(a.id)
            .where(
                a.status == "pending",
                a.created_at_ms <= now_ms - RESCUE_AFTER_MS,
                a.created_at_ms > now_ms - RESCUE_WITHIN_MS,
            )
            .order_by(a.created_at_ms, a.id)
            .limit(RESCUE_BATCH_MAX)
        ).scalars()
        return list(rows)


def fix_price(engine: Engine, aid: str, credits: int, amount_minor: int, currency: str) -> Attempt:
    """Stores the attempt's price on its first run only; returns the attempt as stored, so a
    retry pays what the first run asked Stripe for."""
    a = T_TOPUP_ATTEMPTS.c

    def txn(conn: Connection) -> Attempt:
        conn.execute(
            update(T_TOPUP_ATTEMPTS)
            .where(a.id == aid, a.amount_minor.is_(None))
            .values(credits=credits, amount_minor=amount_minor, currency=currency)
        )
        found = read_attempt(conn, aid)
        assert found is not None
        return found

    return write_transaction(engine, txn)


def note_error(engine: Engine, aid: str, text: str, now_ms: int) -> None:
    """Records why a run will be retried (Stripe unreachable): not a failure of the card."""
    a = T_TOPUP_ATTEMPTS.c
    write_transaction(
        engine,
        lambda conn: conn.execute(
            update(T_TOPUP_ATTEMPTS)
            .where(a.id == aid, a.status.in_(("pending", "processing")))
            .values(error=text[:ERROR_TEXT_LEN_MAX], updated_at_ms=now_ms)
        ),
    )


def mark_processing(engine: Engine, aid: str, payment_intent_id: str, now_ms: int) -> None:
    """Stripe took the payment but has not settled it: payment_intent.succeeded will grant."""
    a = T_TOPUP_ATTEMPTS.c
    write_transaction(
        engine,
        lambda conn: conn.execute(
            update(T_TOPUP_ATTEMPTS)
            .where(a.id == aid, a.status == "pending")
            .values(status="processing", payment_intent_id=payment_intent_id, updated_at_ms=now_ms)
        ),
    )


def mark_succeeded(conn: Connection, aid: str, payment_intent_id: str, now_ms: int) -> bool:
    """In the caller's transaction: the attempt succeeded and its rule's failures in a row
    start again from 0; False when it was marked before (a re-run, or the webhook and the
    job both saw it)."""
    a, r = T_TOPUP_ATTEMPTS.c, T_TOPUP_RULES.c
    done = conn.execute(
        update(T_TOPUP_ATTEMPTS)
        .where(a.id == aid, a.status.in_(("pending", "processing")))
        .values(
            status="succeeded",
            payment_intent_id=payment_intent_id,
            error=None,
            updated_at_ms=now_ms,
        )
    )
    if done.rowcount != 1:
        return False
    attempt = read_attempt(conn, aid)
    assert attempt is not None
    conn.execute(
        update(T_TOPUP_RULES)
        .where(r.account_id == attempt.account_id, r.credit_type == attempt.credit_type)
        .values(consecutive_failures=0)
    )
    return True


def record_failure(
    engine: Engine,
    aid: str,
    *,
    code: str,
    message: str,
    payment_intent_id: str | None,
    now_ms: int,
) -> bool:
    """Marks the attempt failed with Stripe's code, emits `topup.failed` and counts the
    failure on its rule, which is disabled at FAILURES_TO_DISABLE in a row; all in one
    transaction. False when the attempt was settled before (a re-run counts nothing)."""
    a, r = T_TOPUP_ATTEMPTS.c, T_TOPUP_RULES.c

    def txn(conn: Connection) -> bool:
        done = conn.execute(
            update(T_TOPUP_ATTEMPTS)
            .where(a.id == aid, a.status.in_(("pending", "processing")))
            .values(
                status="failed",
                error_code=code[:64],
                error=message[:ERROR_TEXT_LEN_MAX],
                payment_intent_id=payment_intent_id,
                updated_at_ms=now_ms,
            )
        )
        if done.rowcount != 1:
            return False
        attempt = read_attempt(conn, aid)
        assert attempt is not None
        where = (r.account_id == attempt.account_id, r.credit_type == attempt.credit_type)
        conn.execute(
            update(T_TOPUP_RULES)
            .where(*where)
            .values(consecutive_failures=r.consecutive_failures + 1)
        )
        rule = read_rule(conn, attempt.account_id, attempt.credit_type)
        disabled = False
        if rule is not None and rule.enabled and rule.consecutive_failures >= FAILURES_TO_DISABLE:
            reason = f"{rule.consecutive_failures} failed top-ups in a row (last: {code})"
            conn.execute(
                update(T_TOPUP_RULES)
                .where(*where)
                .values(enabled=False, disabled_reason=reason[:255], updated_at_ms=now_ms)
            )
            target = f"{attempt.account_id}/{attempt.credit_type}"
            audit.record_in(conn, SYSTEM_ACTOR, "topup.disable", target, {"reason": reason})
            disabled = True
        payload = {
            "credit_type": attempt.credit_type,
            "attempt_id": aid,
            "crossing_id": attempt.crossing_id,
            "credits": attempt.credits,
            "amount_minor": attempt.amount_minor,
            "currency": attempt.currency,
            "error_code": code,
            "message": message[:ERROR_TEXT_LEN_MAX],
            "consecutive_failures": rule.consecutive_failures if rule else None,
            "rule_disabled": disabled,
        }
        webhooks.emit(
            conn, "topup.failed", attempt.account_id, payload, f"{aid}:topup.failed", now_ms=now_ms
        )
        return True

    return write_transaction(engine, txn)
