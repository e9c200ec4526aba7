"""Stripe events turned into credits (SPEC §9, §11.5): each event applies at most once,
whatever the order and the number of deliveries.

How "at most once" holds:
- A purchase row is keyed by an id derived from the Stripe object it comes from (the
  Checkout Session, or the invoice and credit type), so two events about one payment
  (`checkout.session.completed` and `...async_payment_succeeded`, or a redelivery) meet on
  one row. The row is stored `pending` first; its grant carries an idempotency key and the
  row's id as grant id, and only then is the row marked `paid`. A job that dies in between
  is retried and replays the same grant.
- Refunds and disputes are running totals per payment (`stripe_payments`, and refunds by id
  in `stripe_refunds`), kept even when the purchase is not known yet. The credits to take
  back follow from the totals; the clawback script takes only the difference from what its
  own record says was taken, so stale, repeated or concurrent events never take twice.
- Subscription state is kept with the Stripe `created` time of the event that set it; an
  older event arriving late changes nothing.

Rounding: a refund or dispute of part of a payment takes back
ceil(credits * refunded / paid) credits: the account never keeps a credit whose money went
back. A full refund takes back exactly the credits bought.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, case, func, select, update

from meter import Meter, validate
from meter.errors import GrantExists, InvalidArgument
from meter.ids import expire_entry_id
from meter.times import now_ms
from sync.db import write_transaction
from sync.models import (
    T_ACCOUNTS,
    T_GRANTS,
    T_LEDGER,
    T_PLANS,
    T_PURCHASES,
    T_STRIPE_CUSTOMERS,
    T_STRIPE_EVENTS,
    T_STRIPE_PAYMENTS,
    T_STRIPE_REFUNDS,
    T_SUBSCRIPTIONS,
)
from sync.sqlops import dialect_insert, insert_ignore

# Purchase ids are UUIDv5 of the Stripe object under this namespace: stable across retries.
PURCHASE_NAMESPACE = uuid.UUID("6f1c3e2a-93a4-4c55-9d7e-4a1b8f0c2d11")
# An event in one of these still has to be applied (a job, a retry or `stripe replay`).
UNAPPLIED_EVENT_STATUSES = ("received", "retrying", "failed")
PURCHASE_PRIORITY = 50  # bought credits burn after promotional ones (the welcome grant: 10)


class Ignored(str):
    """The outcome of an event that changes nothing on purpose (another product's, one not
    paid yet, an older state): its type, not its text, makes the event "ignored"."""


class EventError(ValueError):
    """The event lacks what its type needs; it is marked failed, nothing is applied."""


class NotReady(RuntimeError):
    """The event depends on one not yet received or applied; the job retries later."""


@dataclass(frozen=True, slots=True)
class RolloverDue:
    """A rollover that can only be computed once the previous period's grant has expired."""

    purchase_id: str
    at_ms: int


# --- the event store -------------------------------------------------------------------------


def store_event(engine: Engine, event: dict[str, Any], payload: str) -> bool:
    """Stores a verified event by id; False when it was already stored (a redelivery)."""
    event_id, kind = _event_id(event), event.get("type")
    if not isinstance(kind, str) or not kind:
        raise EventError("event: type is missing")

    def txn(conn: Connection) -> bool:
        rows = conn.execute(
            insert_ignore(conn, T_STRIPE_EVENTS).returning(T_STRIPE_EVENTS.c.id),
            [
                {
                    "id": event_id,
                    "type": kind,
                    "payload": payload,
                    "status": "received",
                    "attempts": 0,
                    "received_at_ms": now_ms(),
                }
            ],
        ).all()
        return bool(rows)

    return write_transaction(engine, txn)


def load_event(engine: Engine, event_id: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        payload = conn.execute(
            select(T_STRIPE_EVENTS.c.payload).where(T_STRIPE_EVENTS.c.id == event_id)
        ).scalar_one_or_none()
    return None if payload is None else dict(json.loads(payload))


def event_status(engine: Engine, event_id: str) -> str | None:
    with engine.connect() as conn:
        status = conn.execute(
            select(T_STRIPE_EVENTS.c.status).where(T_STRIPE_EVENTS.c.id == event_id)
        ).scalar_one_or_none()
    return None if status is None else str(status)


def mark_event(engine: Engine, event_id: str, status: str, error: str | None = None) -> None:
    """Records the outcome of one attempt (applied | ignored | failed | retrying)."""
    values: dict[str, Any] = {
        "status": status,
        "error": error,
        "attempts": T_STRIPE_EVENTS.c.attempts + 1,
    }
    if status in ("applied", "ignored"):
        values["applied_at_ms"] = now_ms()
    write_transaction(
        engine,
        lambda conn: conn.execute(
            update(T_STRIPE_EVENTS).where(T_STRIPE_EVENTS.c.id == event_id).values(**values)
        ),
    )


# --- dispatch --------------------------------------------------------------------------------


@dataclass
class Purchases:
    """Applies Stripe events to SQL and the meter. `flush_bucket` writes one bucket's journal
    to SQL now (the rollover reads what expired from SQL)."""

    engine: Engine
    meter: Meter
    flush_bucket: Callable[[int], object]

    def apply(self, event: dict[str, Any]) -> tuple[str, RolloverDue | None]:
        """(what happened, a rollover to run later or None). Raises EventError, NotReady."""
        kind = event.get("type")
        obj = (event.get("data") or {}).get("object")
        if not isinstance(obj, dict):
            raise EventError("event: data.object is missing")
        created_ms = _int(event, "created") * 1000
        if kind in ("checkout.session.completed", "checkout.session.async_payment_succeeded"):
            return self._checkout(obj, kind), None
        if kind == "charge.refunded":
            return self._charge_refunded(obj), None
        if kind == "refund.created":
            return self._refund_created(obj), None
        if kind == "charge.dispute.created":
            return self._dispute(obj), None
        if kind == "invoice.paid":
            return self._invoice_paid(obj)
        if isinstance(kind, str) and kind.startswith("customer.subscription."):
            return self._subscription(obj, kind, created_ms), None
        return Ignored(f"ignored: {kind} is not an event creditmeter uses"), None

    # --- purchases of packs and custom amounts ---------------------------------------------

    def _checkout(self, session: dict[str, Any], kind: str) -> str:
        sid = _str(session, "id")
        account = _account(session.get("client_reference_id"))
        customer = session.get("customer")
        if isinstance(customer, str):
            self._link_customer(account, customer)
        if session.get("mode") == "subscription":
            sub = session.get("subscription")
            plan = (session.get("metadata") or {}).get("plan_id")
            if isinstance(sub, str):
                self._link_subscription(sub, account, plan if isinstance(plan, str) else None)
            return "subscription linked; credits come with each paid invoice"
        if kind == "checkout.session.completed" and session.get("payment_status") != "paid":
            return Ignored(
                "ignored: not paid yet (async_payment_succeeded will follow if it succeeds)"
            )
        meta = session.get("metadata") or {}
        credit_type = _meta_credit_type(meta)
        credits = _meta_int(meta, "credits")
        pid = purchase_id("session", sid)
        row = {
            "id": pid,
            "account_id": account,
            "credit_type": credit_type,
            "credits": credits,
            "pack_id": meta.get("pack_id") or None,
            "plan_id": None,
            "amount_minor": _int(session, "amount_total"),
            "currency": _str(session, "currency"),
            "status": "pending",
            "source": "pack" if meta.get("pack_id") else "custom",
            "stripe_session_id": sid,
            "stripe_payment_intent_id": _opt_str(session, "payment_intent"),
            "created_at_ms": now_ms(),
        }
        granted = self._grant(row, category="paid", source="purchase", expires_at_ms=None)
        taken = self._settle_clawback(pid)
        return f"{'granted' if granted else 'already granted'} {credits} {credit_type}" + (
            f"; took back {taken}" if taken else ""
        )

    def _grant(
        self, row: dict[str, Any], *, category: str, source: str, expires_at_ms: int | None
    ) -> bool:
        """Stores the purchase row once, then its grant once; False when already granted."""
        pid = row["id"]
        write_transaction(
            self.engine, lambda conn: conn.execute(insert_ignore(conn, T_PURCHASES), [row])
        )
        with self.engine.connect() as conn:
            stored = conn.execute(select(T_PURCHASES).where(T_PURCHASES.c.id == pid)).one()
            in_sql = conn.execute(select(T_GRANTS.c.id).where(T_GRANTS.c.id == pid)).first()
        if stored.status != "pending":
            return False
        if in_sql is None:
            # Its idempotency record gone (a retry after more than a day), the grant
            # already in the wallet means it was made.
            with contextlib.suppress(GrantExists):
                self.meter.grant(
                    stored.account_id,
                    stored.credit_type,
                    stored.credits,
                    category=category,
                    priority=PURCHASE_PRIORITY,
                    expires_at_ms=expires_at_ms,
                    source=source,
                    reference_id=stored.stripe_session_id or stored.stripe_invoice_id or pid,
                    idempotency_key=f"stripe-purchase:{pid}",
                    grant_id=pid,
                )
        write_transaction(
            self.engine,
            lambda conn: conn.execute(
                update(T_PURCHASES)
                .where(T_PURCHASES.c.id == pid, T_PURCHASES.c.status == "pending")
                .values(status="paid", grant_id=pid)
            ),
        )
        return True

    # --- refunds and disputes ----------------------------------------------------------------

    def _charge_refunded(self, charge: dict[str, Any]) -> str:
        pi = _str(charge, "payment_intent")
        total = _int(charge, "amount_refunded")
        refunds = (charge.get("refunds") or {}).get("data") or []

        def txn(conn: Connection) -> None:
            _raise_payment(conn, pi, charge_refunded_minor=total)
            for r in refunds:
                if isinstance(r, dict) and r.get("status") in ("succeeded", "pending", None):
                    _store_refund(conn, r, pi)

        write_transaction(self.engine, txn)
        return self._settle_payment(pi, f"refunded total {total}")

    def _refund_created(self, refund: dict[str, Any]) -> str:
        pi = _str(refund, "payment_intent")
        if refund.get("status") in ("failed", "canceled"):
            return Ignored(f"ignored: refund {refund.get('id')} is {refund.get('status')}")
        write_transaction(self.engine, lambda conn: _store_refund(conn, refund, pi))
        return self._settle_payment(pi, f"refund {_str(refund, 'id')}")

    def _dispute(self, dispute: dict[str, Any]) -> str:
        pi = _str(dispute, "payment_intent")
        amount = _int(dispute, "amount")
        write_transaction(self.engine, lambda conn: _raise_payment(conn, pi, disputed_minor=amount))
        return self._settle_payment(pi, f"dispute of {amount}")

    def _settle_payment(self, payment_intent: str, what: str) -> str:
        with self.engine.connect() as conn:
            ids = list(
                conn.execute(
                    select(T_PURCHASES.c.id).where(
                        T_PURCHASES.c.stripe_payment_intent_id == payment_intent,
                        T_PURCHASES.c.status != "pending",
                    )
                ).scalars()
            )
        if not ids:
            return f"{what} recorded; its purchase is not known yet (applied when it is)"
        taken = sum(self._settle_clawback(pid) for pid in ids)
        return f"{what}: took back {taken}"

    def _settle_clawback(self, pid: str) -> int:
        """Takes back what the payment's refund and dispute totals say is due; returns the
        credits taken by this call."""
        with self.engine.connect() as conn:
            p = conn.execute(select(T_PURCHASES).where(T_PURCHASES.c.id == pid)).one()
            if p.status == "pending" or not p.stripe_payment_intent_id:
                return 0
            refunded, disputed = _payment_totals(conn, p.stripe_payment_intent_id)
        share = max(
            _credits_for(p.credits, p.amount_minor, refunded),
            _credits_for(p.credits, p.amount_minor, disputed),
        )
        if disputed:
            write_transaction(self.engine, lambda conn: _flag_account(conn, p.account_id))
        taken = 0
        total = p.clawed_back
        if share > p.clawed_back:
            r = self.meter.clawback(
                p.account_id,
                p.credit_type,
                share,
                reference_id=pid,
                known_total=p.clawed_back,
                grant_id=p.grant_id,
                reason="stripe dispute" if disputed else "stripe refund",
            )
            taken, total = r.amount, r.total
        status = (
            "disputed"
            if disputed
            else "refunded"
            if total >= p.credits
            else ("partially_refunded" if total else "paid")
        )
        write_transaction(
            self.engine,
            lambda conn: conn.execute(
                update(T_PURCHASES)
                .where(T_PURCHASES.c.id == pid)
                .values(
                    refunded_minor=max(refunded, disputed),
                    clawed_back=_at_least(T_PURCHASES.c.clawed_back, total),
                    status=status,
                )
            ),
        )
        return taken

    # --- plans -------------------------------------------------------------------------------

    def _subscription(self, sub: dict[str, Any], kind: str, created_ms: int) -> str:
        sid = _str(sub, "id")
        account = self._account_of(sub, _opt_str(sub, "customer"), sid)
        price = _subscription_price(sub)
        plan = self._plan_by_price(price) if price else None
        status = "canceled" if kind == "customer.subscription.deleted" else _str(sub, "status")
        start, end = _subscription_period(sub)
        row = {
            "id": sid,
            "account_id": account,
            "plan_id": plan["id"] if plan else None,
            "status": status,
            "current_period_start_ms": start,
            "current_period_end_ms": end,
            "updated_at_ms": created_ms,
        }

        def txn(conn: Connection) -> bool:
            stmt = dialect_insert(conn, T_SUBSCRIPTIONS)
            changed = conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["id"],
                    set_={c: stmt.excluded[c] for c in row if c != "id"},
                    where=T_SUBSCRIPTIONS.c.updated_at_ms <= created_ms,
                ).returning(T_SUBSCRIPTIONS.c.id),
                [row],
            ).all()
            return bool(changed)

        if not write_transaction(self.engine, txn):
            return Ignored(f"ignored: a newer event already set subscription {sid}")
        return f"account {account}: plan {row['plan_id']} {status}"

    def _invoice_paid(self, invoice: dict[str, Any]) -> tuple[str, RolloverDue | None]:
        iid = _str(invoice, "id")
        sub_id = _invoice_subscription(invoice)
        if sub_id is None:
            return Ignored("ignored: not a subscription invoice"), None
        line = _invoice_plan_line(invoice)
        if line is None:
            return Ignored("ignored: no line with a price"), None
        price, start_s, end_s = line
        plan = self._plan_by_price(price)
        if plan is None:
            raise EventError(f"invoice {iid}: price {price} is no plan of the catalog")
        account = self._account_of(invoice, _opt_str(invoice, "customer"), sub_id)
        self._link_subscription(sub_id, account, plan["id"], start_s * 1000, end_s * 1000)
        end_ms = end_s * 1000
        if end_ms <= now_ms():
            return Ignored(f"ignored: the period of invoice {iid} is already over"), None
        expires = end_ms if plan["expire_at_period_end"] else None
        allocations: dict[str, int] = json.loads(plan["allocations"])
        done, rollover = [], None
        for i, (ct, credits) in enumerate(sorted(allocations.items())):
            pid = purchase_id("invoice", iid, ct)
            row = {
                "id": pid,
                "account_id": account,
                "credit_type": ct,
                "credits": credits,
                "pack_id": None,
                "plan_id": plan["id"],
                # The invoice's money is counted once, on its first credit type.
                "amount_minor": _int(invoice, "amount_paid") if i == 0 else 0,
                "currency": _str(invoice, "currency"),
                "status": "pending",
                "source": "plan",
                "stripe_session_id": None,
                "stripe_invoice_id": iid,
                "stripe_subscription_id": sub_id,
                "stripe_payment_intent_id": _opt_str(invoice, "payment_intent"),
                "period_end_ms": end_ms,
                "created_at_ms": now_ms(),
            }
            granted = self._grant(row, category="paid", source="plan", expires_at_ms=expires)
            done.append(f"{'granted' if granted else 'already granted'} {credits} {ct}")
            if plan["rollover_cap"] > 0 and expires is not None:
                due = self._rollover_due(pid)
                if due is not None:
                    rollover = due if rollover is None or due.at_ms > rollover.at_ms else rollover
                    done.append(f"rollover into {ct} after {due.at_ms}")
        return f"invoice {iid}, plan {plan['id']}: " + ", ".join(done), rollover

    def _rollover_due(self, pid: str) -> RolloverDue | None:
        """Applies the rollover into purchase `pid` now if the previous period's grant has
        expired; else says when to try."""
        with self.engine.connect() as conn:
            prev = _previous_period(conn, pid)
        if prev is None:
            return None
        if prev.period_end_ms > now_ms():
            return RolloverDue(pid, prev.period_end_ms)
        self.rollover(pid)
        return None

    def rollover(self, pid: str) -> str:
        """Moves the unused credits of the previous period's grant (what expired at its end),
        up to the plan's cap, into a grant expiring with purchase `pid`'s period."""
        with self.engine.connect() as conn:
            cur = conn.execute(select(T_PURCHASES).where(T_PURCHASES.c.id == pid)).one()
            prev = _previous_period(conn, pid)
            cap = conn.execute(
                select(T_PLANS.c.rollover_cap).where(T_PLANS.c.id == cur.plan_id)
            ).scalar_one()
        if prev is None or prev.grant_id is None:
            return "nothing to roll over"
        if prev.period_end_ms > now_ms():
            raise NotReady(f"the period of {prev.id} has not ended")
        unused = self._expired_unused(prev.account_id, prev.credit_type, prev.grant_id)
        credits = min(cap, unused)
        if credits == 0:
            return "nothing unused to roll over"
        row = {
            "id": purchase_id("rollover", prev.id),
            "account_id": cur.account_id,
            "credit_type": cur.credit_type,
            "credits": credits,
            "pack_id": None,
            "plan_id": cur.plan_id,
            "amount_minor": 0,
            "currency": cur.currency,
            "status": "pending",
            "source": "rollover",
            "stripe_invoice_id": cur.stripe_invoice_id,
            "stripe_subscription_id": cur.stripe_subscription_id,
            "period_end_ms": cur.period_end_ms,
            "created_at_ms": now_ms(),
        }
        granted = self._grant(
            row, category="paid", source="rollover", expires_at_ms=cur.period_end_ms
        )
        return f"{'rolled over' if granted else 'already rolled over'} {credits} {cur.credit_type}"

    def _expired_unused(self, account: str, credit_type: str, grant_id: str) -> int:
        """What grant_id held when it expired, from its expire entry in SQL (0 when it was
        spent before): expires it in Redis and flushes the bucket first."""
        self.meter.expire_wallet(account, credit_type)
        self.flush_bucket(self.meter.keys.bucket(account))
        with self.engine.connect() as conn:
            remaining = conn.execute(
                select(T_GRANTS.c.remaining).where(T_GRANTS.c.id == grant_id)
            ).scalar_one_or_none()
            expired = conn.execute(
                select(T_LEDGER.c.amount).where(T_LEDGER.c.id == expire_entry_id(grant_id))
            ).scalar_one_or_none()
        if remaining is None or remaining > 0:
            raise NotReady(f"grant {grant_id}: its expiry is not in SQL yet")
        return -expired if expired is not None else 0

    # --- accounts, customers, plans ------------------------------------------------------------

    def _link_customer(self, account: str, customer: str) -> None:
        write_transaction(
            self.engine,
            lambda conn: conn.execute(
                insert_ignore(conn, T_STRIPE_CUSTOMERS),
                [{"account_id": account, "customer_id": customer, "created_at_ms": now_ms()}],
            ),
        )

    def _link_subscription(
        self,
        sub_id: str,
        account: str,
        plan_id: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
    ) -> None:
        """Knows the subscription's account before its own events arrive (they win: their
        updated_at_ms is later than 0)."""
        row = {
            "id": sub_id,
            "account_id": account,
            "plan_id": plan_id,
            "status": "active",
            "current_period_start_ms": start_ms,
            "current_period_end_ms": end_ms,
            "updated_at_ms": 0,
        }

        def txn(conn: Connection) -> None:
            stmt = dialect_insert(conn, T_SUBSCRIPTIONS)
            c = T_SUBSCRIPTIONS.c
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["id"],
                    set_={
                        "plan_id": func.coalesce(stmt.excluded.plan_id, c.plan_id),
                        "current_period_start_ms": func.coalesce(
                            stmt.excluded.current_period_start_ms, c.current_period_start_ms
                        ),
                        "current_period_end_ms": func.coalesce(
                            stmt.excluded.current_period_end_ms, c.current_period_end_ms
                        ),
                    },
                    where=c.updated_at_ms == 0,
                ),
                [row],
            )

        write_transaction(self.engine, txn)

    def _account_of(self, obj: dict[str, Any], customer: str | None, sub_id: str | None) -> str:
        meta = obj.get("metadata") or {}
        details = (obj.get("parent") or {}).get("subscription_details") or {}
        for candidate in (
            meta.get("account_id"),
            (details.get("metadata") or {}).get("account_id"),
        ):
            if isinstance(candidate, str) and candidate:
                return _account(candidate)
        with self.engine.connect() as conn:
            if sub_id:
                found = conn.execute(
                    select(T_SUBSCRIPTIONS.c.account_id).where(T_SUBSCRIPTIONS.c.id == sub_id)
                ).scalar_one_or_none()
                if found:
                    return str(found)
            if customer:
                found = conn.execute(
                    select(T_STRIPE_CUSTOMERS.c.account_id).where(
                        T_STRIPE_CUSTOMERS.c.customer_id == customer
                    )
                ).scalar_one_or_none()
                if found:
                    return str(found)
        raise NotReady(f"no account known for customer {customer} / subscription {sub_id}")

    def _plan_by_price(self, price: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(T_PLANS).where(T_PLANS.c.stripe_price_id == price)).first()
        return None if row is None else dict(row._mapping)


# --- helpers ---------------------------------------------------------------------------------


def purchase_id(*parts: str) -> str:
    return str(uuid.uuid5(PURCHASE_NAMESPACE, ":".join(parts)))


def _credits_for(credits: int, paid_minor: int, back_minor: int) -> int:
    """ceil(credits * back / paid), at most credits (integers only)."""
    if back_minor <= 0 or paid_minor <= 0:
        return credits if back_minor > 0 else 0
    return min(credits, -(-credits * back_minor // paid_minor))


def _at_least(column: Any, value: int) -> Any:
    """SET column = max(column, value), on every dialect: a running total never goes down."""
    return case((column < value, value), else_=column)


def _payment_totals(conn: Connection, payment_intent: str) -> tuple[int, int]:
    """(refunded, disputed) minor units: the larger of the charge's running total and the sum
    of the refunds seen by id, since either event may come first."""
    pay = conn.execute(
        select(T_STRIPE_PAYMENTS.c.charge_refunded_minor, T_STRIPE_PAYMENTS.c.disputed_minor).where(
            T_STRIPE_PAYMENTS.c.payment_intent_id == payment_intent
        )
    ).first()
    by_id = conn.execute(
        select(func.coalesce(func.sum(T_STRIPE_REFUNDS.c.amount_minor), 0)).where(
            T_STRIPE_REFUNDS.c.payment_intent_id == payment_intent
        )
    ).scalar_one()
    charge_total, disputed = (pay[0], pay[1]) if pay else (0, 0)
    return max(int(charge_total), int(by_id)), int(disputed)


def _raise_payment(
    conn: Connection,
    payment_intent: str,
    *,
    charge_refunded_minor: int = 0,
    disputed_minor: int = 0,
) -> None:
    """Running totals only grow: a stale event cannot lower them."""
    stmt = dialect_insert(conn, T_STRIPE_PAYMENTS)
    c = T_STRIPE_PAYMENTS.c
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["payment_intent_id"],
            set_={
                "charge_refunded_minor": _at_least(c.charge_refunded_minor, charge_refunded_minor),
                "disputed_minor": _at_least(c.disputed_minor, disputed_minor),
                "updated_at_ms": now_ms(),
            },
        ),
        [
            {
                "payment_intent_id": payment_intent,
                "charge_refunded_minor": charge_refunded_minor,
                "disputed_minor": disputed_minor,
                "updated_at_ms": now_ms(),
            }
        ],
    )


def _store_refund(conn: Connection, refund: dict[str, Any], payment_intent: str) -> None:
    conn.execute(
        insert_ignore(conn, T_STRIPE_REFUNDS),
        [
            {
                "id": _str(refund, "id"),
                "payment_intent_id": payment_intent,
                "amount_minor": _int(refund, "amount"),
                "created_at_ms": now_ms(),
            }
        ],
    )


def _flag_account(conn: Connection, account: str) -> None:
    stmt = dialect_insert(conn, T_ACCOUNTS)
    conn.execute(
        stmt.on_conflict_do_update(index_elements=["id"], set_={"flagged": True}),
        [{"id": account, "overdraft_limit": 0, "flagged": True, "created_at_ms": now_ms()}],
    )


def _previous_period(conn: Connection, pid: str) -> Any:
    """The plan purchase of the same subscription and credit type for the period before."""
    p = T_PURCHASES.c
    cur = conn.execute(select(T_PURCHASES).where(p.id == pid)).one()
    return conn.execute(
        select(T_PURCHASES)
        .where(
            p.stripe_subscription_id == cur.stripe_subscription_id,
            p.credit_type == cur.credit_type,
            p.source == "plan",
            p.period_end_ms < cur.period_end_ms,
            p.status != "pending",
        )
        .order_by(p.period_end_ms.desc())
        .limit(1)
    ).first()


def _subscription_price(sub: dict[str, Any]) -> str | None:
    items = ((sub.get("items") or {}).get("data")) or []
    for item in items:
        price = (item or {}).get("price")
        pid = price.get("id") if isinstance(price, dict) else price
        if isinstance(pid, str):
            return pid
    return None


def _subscription_period(sub: dict[str, Any]) -> tuple[int | None, int | None]:
    """Seconds -> ms; the period moved from the subscription to its items in 2025 versions."""
    items = ((sub.get("items") or {}).get("data")) or [{}]
    source = items[0] if "current_period_end" in (items[0] or {}) else sub
    start, end = source.get("current_period_start"), source.get("current_period_end")
    return (
        start * 1000 if isinstance(start, int) else None,
        end * 1000 if isinstance(end, int) else None,
    )


def _invoice_subscription(invoice: dict[str, Any]) -> str | None:
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    sub = details.get("subscription") or invoice.get("subscription")
    return sub if isinstance(sub, str) else None


def _invoice_plan_line(invoice: dict[str, Any]) -> tuple[str, int, int] | None:
    """(price id, period start s, period end s) of the invoice's subscription line."""
    for line in ((invoice.get("lines") or {}).get("data")) or []:
        pricing = ((line.get("pricing") or {}).get("price_details")) or {}
        price = pricing.get("price") or line.get("price")
        price = price.get("id") if isinstance(price, dict) else price
        period = line.get("period") or {}
        if isinstance(price, str) and isinstance(period.get("end"), int):
            return price, int(period.get("start") or 0), int(period["end"])
    return None


def _event_id(event: dict[str, Any]) -> str:
    eid = event.get("id")
    if not isinstance(eid, str) or not eid.startswith("evt_") or len(eid) > 255:
        raise EventError("event: id is missing or not an evt_ id")
    return eid


def _account(value: object) -> str:
    try:
        return validate.account_id(value)
    except InvalidArgument as exc:
        raise EventError(f"client_reference_id / account_id: {exc}") from exc


def _str(obj: dict[str, Any], key: str) -> str:
    v = obj.get(key)
    if not isinstance(v, str) or not v:
        raise EventError(f"{obj.get('object', 'object')}.{key} is missing")
    return v


def _opt_str(obj: dict[str, Any], key: str) -> str | None:
    v = obj.get(key)
    if isinstance(v, dict):  # an expanded object
        v = v.get("id")
    return v if isinstance(v, str) and v else None


def _int(obj: dict[str, Any], key: str) -> int:
    v = obj.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise EventError(f"{obj.get('object', 'object')}.{key} is not a non-negative integer")
    return v


def _meta_int(meta: dict[str, Any], key: str) -> int:
    """Stripe metadata values are strings: "50" -> 50 (digits only)."""
    v = meta.get(key)
    if not isinstance(v, str) or not v.isdigit() or int(v) < 1:
        raise EventError(f"metadata.{key} is not a positive integer")
    return validate.credits(key, int(v), low=1)


def _meta_credit_type(meta: dict[str, Any]) -> str:
    try:
        return validate.credit_type(meta.get("credit_type"))
    except InvalidArgument as exc:
        raise EventError(f"metadata.credit_type: {exc}") from exc
