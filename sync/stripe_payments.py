"""What Stripe says went back of one payment (a payment intent), kept in SQL before and after
its purchase is known: the charge's running refunded total, each refund and each dispute by
id in its latest state, and which invoice each payment paid (sync.purchases applies them).

Every write only moves forward: a running total never goes down, a refund or dispute never
returns to an earlier status, so a stale or repeated event changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, case, exists, func, select

from meter.times import now_ms
from sync.models import (
    T_ACCOUNTS,
    T_PURCHASES,
    T_STRIPE_DISPUTES,
    T_STRIPE_INVOICE_PAYMENTS,
    T_STRIPE_PAYMENTS,
    T_STRIPE_REFUNDS,
)
from sync.sqlops import dialect_insert, insert_ignore
from sync.stripe_objects import (
    DISPUTE_CLEARED,
    DISPUTE_FINAL_RANK,
    DISPUTE_INQUIRY,
    DISPUTE_STATUS_RANK,
    REFUND_FINAL_RANK,
    REFUND_RETURNED_NOTHING,
    REFUND_STATUS_RANK,
)


@dataclass(frozen=True, slots=True)
class MoneyBack:
    """Minor units of one payment, in the currency it was charged in."""

    paid: int  # what its purchases were charged (all credit types of a plan invoice)
    refunded: int
    disputed: int  # disputes that withdrew the money (not inquiries, not won ones)

    @property
    def back(self) -> int:
        """Refunds and lost or open disputes add up, capped at the payment."""
        return min(self.paid, self.refunded + self.disputed)


def money_back(conn: Connection, payment_intent: str) -> MoneyBack:
    p = T_PURCHASES.c
    charged = func.coalesce(p.presentment_amount_minor, p.amount_minor)
    paid = conn.execute(
        select(func.coalesce(func.sum(charged), 0)).where(
            p.stripe_payment_intent_id == payment_intent, p.source != "rollover"
        )
    ).scalar_one()
    return MoneyBack(int(paid), _refunded(conn, payment_intent), _disputed(conn, payment_intent))


def _refunded(conn: Connection, payment_intent: str) -> int:
    """The larger of the charge's running total (less the refunds that failed since: Stripe
    lowers `amount_refunded` then) and the refunds seen by id that did not fail, since
    either event may come first."""
    r = T_STRIPE_REFUNDS.c
    failed = r.status.in_(REFUND_RETURNED_NOTHING)
    live, failed_sum = conn.execute(
        select(
            func.coalesce(func.sum(case((failed, 0), else_=r.amount_minor)), 0),
            func.coalesce(func.sum(case((failed, r.amount_minor), else_=0)), 0),
        ).where(r.payment_intent_id == payment_intent)
    ).one()
    charge_total = conn.execute(
        select(T_STRIPE_PAYMENTS.c.charge_refunded_minor).where(
            T_STRIPE_PAYMENTS.c.payment_intent_id == payment_intent
        )
    ).scalar_one_or_none()
    return max(int(charge_total or 0) - int(failed_sum), int(live), 0)


def _disputed(conn: Connection, payment_intent: str) -> int:
    d = T_STRIPE_DISPUTES.c
    rows = conn.execute(
        select(d.status, d.amount_minor).where(d.payment_intent_id == payment_intent)
    ).all()
    if not rows:
        # Recorded before disputes were kept by id: a dispute that withdrew the money.
        legacy = conn.execute(
            select(T_STRIPE_PAYMENTS.c.disputed_minor).where(
                T_STRIPE_PAYMENTS.c.payment_intent_id == payment_intent
            )
        ).scalar_one_or_none()
        return int(legacy or 0)
    return sum(
        int(amount)
        for status, amount in rows
        if status not in DISPUTE_INQUIRY and status not in DISPUTE_CLEARED
    )


def raise_charge_refunded(conn: Connection, payment_intent: str, total_minor: int) -> None:
    stmt = dialect_insert(conn, T_STRIPE_PAYMENTS)
    c = T_STRIPE_PAYMENTS.c
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["payment_intent_id"],
            set_={
                "charge_refunded_minor": _at_least(c.charge_refunded_minor, total_minor),
                "updated_at_ms": now_ms(),
            },
        ),
        [
            {
                "payment_intent_id": payment_intent,
                "charge_refunded_minor": total_minor,
                "disputed_minor": 0,
                "updated_at_ms": now_ms(),
            }
        ],
    )


def store_refund(
    conn: Connection, refund_id: str, payment_intent: str, amount_minor: int, status: str
) -> None:
    """Keeps the refund's most advanced status: a late `pending` never revives a failed one."""
    r = T_STRIPE_REFUNDS.c
    stmt = dialect_insert(conn, T_STRIPE_REFUNDS)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["id"],
            set_={"status": stmt.excluded.status, "amount_minor": stmt.excluded.amount_minor},
            where=_rank(r.status, REFUND_STATUS_RANK, REFUND_FINAL_RANK)
            <= _rank(stmt.excluded.status, REFUND_STATUS_RANK, REFUND_FINAL_RANK),
        ),
        [
            {
                "id": refund_id,
                "payment_intent_id": payment_intent,
                "amount_minor": amount_minor,
                "status": status,
                "created_at_ms": now_ms(),
            }
        ],
    )


def store_dispute(
    conn: Connection, dispute_id: str, payment_intent: str, amount_minor: int, status: str
) -> None:
    """Keeps the dispute's most advanced status (an inquiry may become a dispute; won, lost
    and a closed inquiry are final)."""
    d = T_STRIPE_DISPUTES.c
    stmt = dialect_insert(conn, T_STRIPE_DISPUTES)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["id"],
            set_={
                "status": stmt.excluded.status,
                "amount_minor": stmt.excluded.amount_minor,
                "updated_at_ms": stmt.excluded.updated_at_ms,
            },
            where=_rank(d.status, DISPUTE_STATUS_RANK, DISPUTE_FINAL_RANK)
            <= _rank(stmt.excluded.status, DISPUTE_STATUS_RANK, DISPUTE_FINAL_RANK),
        ),
        [
            {
                "id": dispute_id,
                "payment_intent_id": payment_intent,
                "amount_minor": amount_minor,
                "status": status,
                "updated_at_ms": now_ms(),
            }
        ],
    )


def link_invoice_payment(conn: Connection, invoice_id: str, payment_intent: str) -> None:
    conn.execute(
        insert_ignore(conn, T_STRIPE_INVOICE_PAYMENTS),
        [
            {
                "invoice_id": invoice_id,
                "payment_intent_id": payment_intent,
                "created_at_ms": now_ms(),
            }
        ],
    )


def invoice_payment_intent(conn: Connection, invoice_id: str) -> str | None:
    """The first payment intent seen paying the invoice (an `invoice_payment.paid` event)."""
    t = T_STRIPE_INVOICE_PAYMENTS.c
    found = conn.execute(
        select(t.payment_intent_id)
        .where(t.invoice_id == invoice_id)
        .order_by(t.created_at_ms, t.payment_intent_id)
        .limit(1)
    ).scalar_one_or_none()
    return None if found is None else str(found)


def set_dispute_flag(conn: Connection, account: str) -> None:
    """Flags the account while one of its payments has a dispute or inquiry not decided in its
    favour (open or lost); clears the flag once all are won or closed. An account with no
    dispute at all is left alone."""
    d, p = T_STRIPE_DISPUTES.c, T_PURCHASES.c
    joined = and_(d.payment_intent_id == p.stripe_payment_intent_id, p.account_id == account)
    any_dispute = conn.execute(select(exists().where(joined))).scalar_one()
    if not any_dispute:
        return
    flagged = bool(
        conn.execute(select(exists().where(joined, d.status.not_in(DISPUTE_CLEARED)))).scalar_one()
    )
    stmt = dialect_insert(conn, T_ACCOUNTS)
    conn.execute(
        stmt.on_conflict_do_update(index_elements=["id"], set_={"flagged": flagged}),
        [{"id": account, "overdraft_limit": 0, "flagged": flagged, "created_at_ms": now_ms()}],
    )


def _rank(column: Any, ranks: dict[str, int], other: int) -> Any:
    return case(*((column == status, rank) for status, rank in ranks.items()), else_=other)


def _at_least(column: Any, value: int) -> Any:
    """SET column = max(column, value), on every dialect: a running total never goes down."""
    return case((column < value, value), else_=column)
