"""Stripe events turned into credits (SPEC §9, §11.5): each event applies at most once,
whatever the order and the number of deliveries, on every Stripe API version
(sync.stripe_objects reads the shapes).

How "at most once" holds:
- A purchase row is keyed by an id derived from the Stripe object it comes from (the
  Checkout Session, or the invoice and credit type), so two events about one payment
  (`checkout.session.completed` and `...async_payment_succeeded`, or a redelivery) meet on
  one row. The row is stored `pending` first; its grant carries an idempotency key and the
  row's id as grant id, and only then is the row marked `paid`. A job that dies in between
  is retried and replays the same grant.
- Refunds and disputes are kept per payment (the charge's running refunded total, each
  refund by id with its status, each dispute by id with its status), even when the purchase
  is not known yet. The money back is refunds + disputes that withdrew money, capped at the
  payment; each purchase of the payment (each credit type of a plan invoice) holds back its
  proportional share of credits. The clawback script takes only the difference from what its
  own record says was taken; when the share falls (a dispute won, a refund failed) the
  difference is given back as a grant keyed by the new running total, so stale, repeated or
  concurrent events never take or give twice.
- Subscription state is kept with the Stripe `created` time of the event that set it, then
  its period end and status order for events of the same second; an older state arriving late
  changes nothing.

Rounding: a refund or dispute of part of a payment takes back
ceil(credits * back / paid) credits: the account never keeps a credit whose money went
back. A full refund takes back exactly the credits bought.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, and_, case, func, or_, select, update

from meter import Meter, validate
from meter.errors import GrantExists, InvalidArgument
from meter.ids import expire_entry_id
from meter.times import now_ms
from sync import (
    checkout_quotes,
    stripe_objects,
    stripe_payments,
    topup_attempts,
    webhooks_purchases,
)
from sync.checkout_quotes import StoredQuote
from sync.db import write_transaction
from sync.models import (
    T_GRANTS,
    T_LEDGER,
    T_PLANS,
    T_PURCHASES,
    T_STRIPE_CUSTOMERS,
    T_STRIPE_EVENTS,
    T_SUBSCRIPTIONS,
)
from sync.sqlops import dialect_insert, insert_ignore

log = logging.getLogger(__name__)

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

CHECKOUT_EVENTS = ("checkout.session.completed", "checkout.session.async_payment_succeeded")
# All carry a Refund object; `charge.refund.updated` is what Stripe sends when a refund fails.
REFUND_EVENTS = ("refund.created", "refund.updated", "refund.failed", "charge.refund.updated")
# The metadata keys creditmeter's checkouts set (sync.stripe_api): a session with none of them
# was made by another product on the same Stripe account.
OUR_METADATA = ("account_id", "credit_type", "credits", "plan_id")


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
        if kind in CHECKOUT_EVENTS:
            return self._checkout(obj, kind), None
        if kind == "charge.refunded":
            return self._charge_refunded(obj), None
        if kind in REFUND_EVENTS:
            return self._refund(obj), None
        if isinstance(kind, str) and kind.startswith("charge.dispute."):
            return self._dispute(obj), None
        if kind == "payment_intent.succeeded":
            return self.topup_paid(obj), None
        if kind == "payment_intent.payment_failed":
            return self._topup_failed(obj), None
        if kind == "invoice.paid":
            return self._invoice_paid(obj)
        if kind == "invoice_payment.paid":
            return self._invoice_payment(obj), None
        if isinstance(kind, str) and kind.startswith("customer.subscription."):
            return self._subscription(obj, kind, created_ms), None
        return Ignored(f"ignored: {kind} is not an event creditmeter uses"), None

    # --- purchases of packs and custom amounts ---------------------------------------------

    def _checkout(self, session: dict[str, Any], kind: str) -> str:
        sid = _str(session, "id")
        meta = session.get("metadata") or {}
        if not any(k in meta for k in OUR_METADATA):
            return Ignored(f"ignored: session {sid} has no creditmeter metadata")
        account = _account(session.get("client_reference_id") or meta.get("account_id"))
        customer = session.get("customer")
        if isinstance(customer, str):
            self._link_customer(account, customer)
        if session.get("mode") == "subscription":
            sub = session.get("subscription")
            plan = meta.get("plan_id")
            if isinstance(sub, str):
                self._link_subscription(sub, account, plan if isinstance(plan, str) else None)
            return "subscription linked; credits come with each paid invoice"
        if kind == "checkout.session.completed" and session.get("payment_status") != "paid":
            return Ignored(
                "ignored: not paid yet (async_payment_succeeded will follow if it succeeds)"
            )
        pid = purchase_id("session", sid)
        with self.engine.connect() as conn:
            done = conn.execute(
                select(T_PURCHASES.c.credits, T_PURCHASES.c.credit_type).where(
                    T_PURCHASES.c.id == pid, T_PURCHASES.c.status != "pending"
                )
            ).first()
        if done is not None:  # a redelivery (of a purchase granted before quotes were kept too)
            moved = self._settle_clawback(pid)
            return f"already granted {done.credits} {done.credit_type}" + (
                f"; {_moved(moved)}" if moved else ""
            )
        amount, currency, presented = _settled_amount(session)
        quote = self._quoted(sid, account, amount, currency)
        credit_type, credits = quote.credit_type, quote.credits
        row = {
            "id": pid,
            "account_id": account,
            "credit_type": credit_type,
            "credits": credits,
            "pack_id": quote.pack_id,
            "plan_id": None,
            "amount_minor": amount,
            "currency": currency,
            "presentment_amount_minor": presented[0] if presented else None,
            "presentment_currency": presented[1] if presented else None,
            "status": "pending",
            "source": "pack" if quote.pack_id else "custom",
            "stripe_session_id": sid,
            "stripe_payment_intent_id": _opt_str(session, "payment_intent"),
            "created_at_ms": now_ms(),
        }
        granted = self._grant(row, category="paid", source="purchase", expires_at_ms=None)
        moved = self._settle_clawback(pid)
        return f"{'granted' if granted else 'already granted'} {credits} {credit_type}" + (
            f"; {_moved(moved)}" if moved else ""
        )

    def _quoted(self, sid: str, account: str, amount: int, currency: str) -> StoredQuote:
        """The quote stored when creditmeter created the session: the credits come from it,
        never from the event's metadata, and only if the session charged what it says."""
        with self.engine.connect() as conn:
            quote = checkout_quotes.quote_for(conn, sid)
        if quote is None:
            raise EventError(f"session {sid}: no quote was stored at checkout; nothing granted")
        charged = (account, amount, currency)
        if charged != (quote.account_id, quote.amount_minor, quote.currency):
            log.error("stripe session %s: charged %s, quoted %s", sid, charged, quote)
            raise EventError(
                f"session {sid}: {account} paid {amount} {currency}, the quote was"
                f" {quote.amount_minor} {quote.currency} for {quote.account_id}; nothing granted"
            )
        return quote

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

        def paid(conn: Connection) -> None:
            conn.execute(
                update(T_PURCHASES)
                .where(T_PURCHASES.c.id == pid, T_PURCHASES.c.status == "pending")
                .values(status="paid", grant_id=pid)
            )
            webhooks_purchases.purchase_completed(conn, stored)

        write_transaction(self.engine, paid)
        return True

    # --- auto top-ups ------------------------------------------------------------------------

    def topup_paid(self, intent: dict[str, Any]) -> str:
        """Grants a succeeded auto top-up once: the job that created the payment intent and
        the `payment_intent.succeeded` webhook both come here, and meet on one purchase row
        (keyed by the attempt) and one grant."""
        pi = _str(intent, "id")
        aid = (intent.get("metadata") or {}).get("topup_attempt_id")
        if not isinstance(aid, str) or not aid:
            return Ignored(f"ignored: payment intent {pi} is not an auto top-up")
        if intent.get("status") != "succeeded":
            return Ignored(f"ignored: payment intent {pi} is {intent.get('status')}")
        attempt = topup_attempts.get_attempt(self.engine, aid)
        if attempt is None or attempt.credits is None:
            raise EventError(f"payment intent {pi}: no top-up attempt {aid}; nothing granted")
        paid = (_int(intent, "amount"), _str(intent, "currency"))
        if paid != (attempt.amount_minor, attempt.currency):
            log.error("stripe payment intent %s: paid %s, attempt %s", pi, paid, attempt)
            raise EventError(
                f"payment intent {pi}: paid {paid[0]} {paid[1]}, top-up {aid} asked"
                f" {attempt.amount_minor} {attempt.currency}; nothing granted"
            )
        pid = purchase_id("topup", aid)
        row = {
            "id": pid,
            "account_id": attempt.account_id,
            "credit_type": attempt.credit_type,
            "credits": attempt.credits,
            "pack_id": None,
            "plan_id": None,
            "amount_minor": attempt.amount_minor,
            "currency": attempt.currency,
            "status": "pending",
            "source": "topup",
            "stripe_payment_intent_id": pi,
            "created_at_ms": now_ms(),
        }
        granted = self._grant(row, category="paid", source="topup", expires_at_ms=None)
        write_transaction(
            self.engine, lambda conn: topup_attempts.mark_succeeded(conn, aid, pi, now_ms())
        )
        moved = self._settle_clawback(pid)
        return (
            f"{'granted' if granted else 'already granted'} {attempt.credits}"
            f" {attempt.credit_type} (top-up {aid})" + (f"; {_moved(moved)}" if moved else "")
        )

    def _topup_failed(self, intent: dict[str, Any]) -> str:
        """Records a failed auto top-up (Stripe sends this for a decline the job saw too, or
        for a payment that was processing): the failure counts once, whoever records it."""
        pi = _str(intent, "id")
        aid = (intent.get("metadata") or {}).get("topup_attempt_id")
        if not isinstance(aid, str) or not aid:
            return Ignored(f"ignored: payment intent {pi} is not an auto top-up")
        error = intent.get("last_payment_error") or {}
        code = error.get("code") or error.get("decline_code") or "payment_failed"
        recorded = topup_attempts.record_failure(
            self.engine,
            aid,
            code=str(code),
            message=str(error.get("message") or "the payment failed"),
            payment_intent_id=pi,
            now_ms=now_ms(),
        )
        if not recorded:
            return Ignored(f"ignored: no pending top-up {aid} (settled before, or not ours)")
        return f"top-up {aid} failed: {code}"

    # --- refunds and disputes ----------------------------------------------------------------

    def _charge_refunded(self, charge: dict[str, Any]) -> str:
        pi = _opt_str(charge, "payment_intent")
        if pi is None:
            return _no_payment_intent(charge)
        total = _int(charge, "amount_refunded")
        # Listed only on endpoints pinned before 2022-11-15 (later the list is not expanded).
        refunds = (charge.get("refunds") or {}).get("data") or []

        def txn(conn: Connection) -> None:
            stripe_payments.raise_charge_refunded(conn, pi, total)
            for r in refunds:
                if isinstance(r, dict):
                    _store_refund(conn, r, pi)

        write_transaction(self.engine, txn)
        return self._settle_payment(pi, f"refunded total {total}")

    def _refund(self, refund: dict[str, Any]) -> str:
        pi = _opt_str(refund, "payment_intent")
        if pi is None:
            return _no_payment_intent(refund)
        write_transaction(self.engine, lambda conn: _store_refund(conn, refund, pi))
        return self._settle_payment(
            pi, f"refund {_str(refund, 'id')} {refund.get('status') or 'succeeded'}"
        )

    def _dispute(self, dispute: dict[str, Any]) -> str:
        pi = _opt_str(dispute, "payment_intent")
        if pi is None:
            return _no_payment_intent(dispute)
        did, status, amount = _str(dispute, "id"), _str(dispute, "status"), _int(dispute, "amount")
        write_transaction(
            self.engine, lambda conn: stripe_payments.store_dispute(conn, did, pi, amount, status)
        )
        return self._settle_payment(pi, f"dispute {did} {status} ({amount})")

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
            # Another product's payment, or a purchase still to come: it applies the totals.
            return Ignored(f"ignored: {what} recorded; its purchase is not known yet")
        moved = sum(self._settle_clawback(pid) for pid in ids)
        return f"{what}: {_moved(moved)}"

    def _settle_clawback(self, pid: str) -> int:
        """Holds back the purchase's share of what went back of its payment: takes what is
        missing, gives back what is held beyond it. Returns the credits taken (< 0: given)."""
        with self.engine.connect() as conn:
            p = conn.execute(select(T_PURCHASES).where(T_PURCHASES.c.id == pid)).one()
            if p.status == "pending" or not p.stripe_payment_intent_id:
                return 0
            money = stripe_payments.money_back(conn, p.stripe_payment_intent_id)
        share = _credits_for(p.credits, money.paid, money.back)
        clawed, returned = int(p.clawed_back), int(p.returned)
        held = clawed - returned
        if share > held:
            r = self.meter.clawback(
                p.account_id,
                p.credit_type,
                returned + share,
                reference_id=pid,
                known_total=clawed,
                grant_id=p.grant_id,
                reason="stripe dispute" if money.disputed else "stripe refund",
            )
            clawed = int(r.total)
        elif share < held:
            returned += held - share
            self._give_back(p, held - share, returned)

        def txn(conn: Connection) -> None:
            # The totals read again where they are written: of two settlements racing, the
            # last to commit writes the newest status, not the one it started from.
            now = stripe_payments.money_back(conn, p.stripe_payment_intent_id)
            # In the catalog's currency, this purchase's part of the money back.
            refunded_minor = now.back * p.amount_minor // now.paid if now.paid else 0
            conn.execute(
                update(T_PURCHASES)
                .where(T_PURCHASES.c.id == pid)
                .values(
                    refunded_minor=refunded_minor,
                    clawed_back=_at_least(T_PURCHASES.c.clawed_back, clawed),
                    returned=_at_least(T_PURCHASES.c.returned, returned),
                    status=_payment_status(now),
                )
            )
            stripe_payments.set_dispute_flag(conn, p.account_id)
            if not money.disputed:  # a dispute's clawback is not a refund
                taken_now = clawed - int(p.clawed_back)
                webhooks_purchases.refund_applied(conn, p, taken_now, clawed, refunded_minor)

        write_transaction(self.engine, txn)
        return (clawed - int(p.clawed_back)) - (returned - int(p.returned))

    def _give_back(self, p: Any, credits: int, returned_total: int) -> None:
        """Grants `credits` back once per running total `returned_total`, expiring with the
        purchase's own grant; nothing when that has already expired."""
        expires = p.period_end_ms if p.source == "plan" and self._expires_with_period(p) else None
        if expires is not None and expires <= now_ms():
            return
        with contextlib.suppress(GrantExists):
            self.meter.grant(
                p.account_id,
                p.credit_type,
                credits,
                category="paid",
                priority=PURCHASE_PRIORITY,
                expires_at_ms=expires,
                source="stripe-return",
                reference_id=p.id,
                idempotency_key=f"stripe-return:{p.id}:{returned_total}",
                grant_id=purchase_id("return", p.id, str(returned_total)),
            )

    def _expires_with_period(self, p: Any) -> bool:
        with self.engine.connect() as conn:
            return bool(
                conn.execute(
                    select(T_PLANS.c.expire_at_period_end).where(T_PLANS.c.id == p.plan_id)
                ).scalar_one_or_none()
            )

    # --- plans -------------------------------------------------------------------------------

    def _subscription(self, sub: dict[str, Any], kind: str, created_ms: int) -> str:
        sid = _str(sub, "id")
        price = stripe_objects.subscription_price(sub)
        plan = self._plan_by_price(price) if price else None
        try:
            account = self._account_of(sub, _opt_str(sub, "customer"), sid)
        except NotReady:
            if plan is None:
                return Ignored(f"ignored: subscription {sid} is not to a creditmeter plan")
            raise
        status = "canceled" if kind == "customer.subscription.deleted" else _str(sub, "status")
        start, end = stripe_objects.subscription_period(sub)
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
                    where=_not_newer(created_ms, end, status),
                ).returning(T_SUBSCRIPTIONS.c.id),
                [row],
            ).all()
            return bool(changed)

        if not write_transaction(self.engine, txn):
            return Ignored(f"ignored: a newer event already set subscription {sid}")
        return f"account {account}: plan {row['plan_id']} {status}"

    def _invoice_paid(self, invoice: dict[str, Any]) -> tuple[str, RolloverDue | None]:
        """Grants the plan's allocation for the invoice's period, less what other invoices
        already granted for that period: a cycle invoice grants it whole, an upgrade's
        proration invoice the difference, a downgrade's nothing (see the README's table)."""
        iid = _str(invoice, "id")
        sub_id = stripe_objects.invoice_subscription(invoice)
        if sub_id is None:
            return Ignored("ignored: not a subscription invoice"), None
        found = self._plan_line(invoice)
        if found is None:
            return Ignored(f"ignored: invoice {iid} has no line of a creditmeter plan"), None
        line, plan = found
        account = self._account_of(invoice, _opt_str(invoice, "customer"), sub_id)
        start_ms, end_ms = line.start_s * 1000, line.end_s * 1000
        self._link_subscription(sub_id, account, plan["id"], start_ms, end_ms)
        if end_ms <= now_ms():
            return Ignored(f"ignored: the period of invoice {iid} is already over"), None
        pi = self._invoice_payment_intent(invoice, iid)
        expires = end_ms if plan["expire_at_period_end"] else None
        allocations: dict[str, int] = json.loads(plan["allocations"])
        with self.engine.connect() as conn:
            # A redelivery grants what the first delivery did, whatever came in between.
            due = _invoice_grants(conn, iid)
            before = _granted_for_period(conn, sub_id, end_ms, iid)
        due = due or {
            ct: credits - before.get(ct, 0)
            for ct, credits in sorted(allocations.items())
            if credits > before.get(ct, 0)
        }
        if not due:
            return Ignored(
                f"ignored: invoice {iid}: plan {plan['id']} grants nothing more this period"
            ), None
        done, rollover = [], None
        for i, (ct, credits) in enumerate(due.items()):
            pid = purchase_id("invoice", iid, ct)
            row = {
                "id": pid,
                "account_id": account,
                "credit_type": ct,
                "credits": credits,
                "pack_id": None,
                "plan_id": plan["id"],
                # The invoice's money is counted once, on its first credit type; a refund
                # takes each type's share of the whole invoice.
                "amount_minor": _int(invoice, "amount_paid") if i == 0 else 0,
                "currency": _str(invoice, "currency"),
                "status": "pending",
                "source": "plan",
                "stripe_session_id": None,
                "stripe_invoice_id": iid,
                "stripe_subscription_id": sub_id,
                "stripe_payment_intent_id": pi,
                "period_end_ms": end_ms,
                "created_at_ms": now_ms(),
            }
            granted = self._grant(row, category="paid", source="plan", expires_at_ms=expires)
            moved = self._settle_clawback(pid)
            done.append(
                f"{'granted' if granted else 'already granted'} {credits} {ct}"
                + (f" ({_moved(moved)})" if moved else "")
            )
            if plan["rollover_cap"] > 0 and expires is not None and not line.proration:
                due_at = self._rollover_due(pid)
                if due_at is not None:
                    rollover = (
                        due_at if rollover is None or due_at.at_ms > rollover.at_ms else rollover
                    )
                    done.append(f"rollover into {ct} after {due_at.at_ms}")
        return f"invoice {iid}, plan {plan['id']}: " + ", ".join(done), rollover

    def _plan_line(
        self, invoice: dict[str, Any]
    ) -> tuple[stripe_objects.PlanLine, dict[str, Any]] | None:
        """The line that says which plan the invoice pays for, and that plan: the period's
        own line (not a proration) ending last, else the charged proration ending last (an
        upgrade billed at once). A refunded proration (a downgrade) grants nothing."""
        lines = stripe_objects.plan_lines(invoice)
        ranked = sorted(
            (ln for ln in lines if not ln.proration or ln.amount_minor > 0),
            key=lambda ln: (not ln.proration, ln.end_s),
        )
        for line in reversed(ranked):
            plan = self._plan_by_price(line.price_id)
            if plan is not None:
                return line, plan
        return None

    def _invoice_payment_intent(self, invoice: dict[str, Any], iid: str) -> str | None:
        named = stripe_objects.invoice_payment_intents(invoice)

        def txn(conn: Connection) -> None:
            for pi in named:
                stripe_payments.link_invoice_payment(conn, iid, pi)

        write_transaction(self.engine, txn)
        with self.engine.connect() as conn:
            return stripe_payments.invoice_payment_intent(conn, iid)

    def _invoice_payment(self, payment: dict[str, Any]) -> str:
        """An invoice paid by a payment intent (2025-03-31 on): links the invoice's purchases
        to it, so refunds and disputes of that payment reach them."""
        iid = _str(payment, "invoice")
        pi = _opt_str(payment.get("payment") or {}, "payment_intent")
        if pi is None or payment.get("status") not in (None, "paid"):
            return Ignored(f"ignored: invoice {iid} was not paid by a payment intent")

        def txn(conn: Connection) -> None:
            stripe_payments.link_invoice_payment(conn, iid, pi)
            conn.execute(
                update(T_PURCHASES)
                .where(
                    T_PURCHASES.c.stripe_invoice_id == iid,
                    T_PURCHASES.c.source == "plan",
                    T_PURCHASES.c.stripe_payment_intent_id.is_(None),
                )
                .values(stripe_payment_intent_id=pi)
            )

        write_transaction(self.engine, txn)
        return self._settle_payment(pi, f"invoice {iid} paid by {pi}")

    def _rollover_due(self, pid: str) -> RolloverDue | None:
        """Applies the rollover into purchase `pid` now if the previous period's grant has
        expired; else says when to try."""
        with self.engine.connect() as conn:
            prev = _previous_period(conn, pid)
        if not prev:
            return None
        if prev[0].period_end_ms > now_ms():
            return RolloverDue(pid, prev[0].period_end_ms)
        self.rollover(pid)
        return None

    def rollover(self, pid: str) -> str:
        """Moves the unused credits of the previous period's grants (what expired at its end:
        its own invoice's and an upgrade's top-up), up to the plan's cap, into a grant
        expiring with purchase `pid`'s period."""
        with self.engine.connect() as conn:
            cur = conn.execute(select(T_PURCHASES).where(T_PURCHASES.c.id == pid)).one()
            rows = _previous_period(conn, pid)
            cap = conn.execute(
                select(T_PLANS.c.rollover_cap).where(T_PLANS.c.id == cur.plan_id)
            ).scalar_one()
        granted_rows = [r for r in rows if r.grant_id is not None]
        if not granted_rows:
            return "nothing to roll over"
        prev = granted_rows[0]
        if prev.period_end_ms > now_ms():
            raise NotReady(f"the period of {prev.id} has not ended")
        unused = sum(
            self._expired_unused(r.account_id, r.credit_type, r.grant_id) for r in granted_rows
        )
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
        # The subscription's metadata on an invoice: under `parent` from 2025-03-31 on, at the
        # top level before.
        details = (obj.get("parent") or {}).get("subscription_details") or (
            obj.get("subscription_details") or {}
        )
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


def _store_refund(conn: Connection, refund: dict[str, Any], payment_intent: str) -> None:
    stripe_payments.store_refund(
        conn,
        _str(refund, "id"),
        payment_intent,
        _int(refund, "amount"),
        refund.get("status") or "succeeded",
    )


def _payment_status(money: stripe_payments.MoneyBack) -> str:
    if money.disputed:
        return "disputed"
    if money.paid and money.back >= money.paid:
        return "refunded"
    return "partially_refunded" if money.back else "paid"


def _no_payment_intent(obj: dict[str, Any]) -> Ignored:
    """Every creditmeter payment is a Checkout Session's or an invoice's payment intent."""
    return Ignored(f"ignored: {obj.get('object')} {obj.get('id')} has no payment intent")


def _moved(credits: int) -> str:
    return f"took back {credits}" if credits >= 0 else f"gave back {-credits}"


def _settled_amount(session: dict[str, Any]) -> tuple[int, str, tuple[int, str] | None]:
    """(amount, currency) in the catalog's currency, and what the customer paid in theirs
    when Adaptive Pricing converted the price (`currency_conversion`), else None."""
    conversion = session.get("currency_conversion")
    paid = _int(session, "amount_total"), _str(session, "currency")
    if isinstance(conversion, dict) and conversion.get("source_currency"):
        return _int(conversion, "amount_total"), _str(conversion, "source_currency"), paid
    return paid[0], paid[1], None


def _granted_for_period(
    conn: Connection, sub_id: str, period_end_ms: int, invoice_id: str
) -> dict[str, int]:
    """Credits per type the plan purchases of other invoices granted for this period."""
    p = T_PURCHASES.c
    rows = conn.execute(
        select(p.credit_type, func.sum(p.credits))
        .where(
            p.stripe_subscription_id == sub_id,
            p.period_end_ms == period_end_ms,
            p.source == "plan",
            p.stripe_invoice_id != invoice_id,
        )
        .group_by(p.credit_type)
    ).all()
    return {str(ct): int(n) for ct, n in rows}


def _invoice_grants(conn: Connection, invoice_id: str) -> dict[str, int]:
    p = T_PURCHASES.c
    rows = conn.execute(
        select(p.credit_type, p.credits).where(
            p.stripe_invoice_id == invoice_id, p.source == "plan"
        )
    ).all()
    return {str(ct): int(n) for ct, n in rows}


def _not_newer(created_ms: int, period_end_ms: int | None, status: str) -> Any:
    """The stored subscription state is not newer than this event's: an earlier `created`,
    or the same second and an earlier period end, or the same period and a status no later
    in SUBSCRIPTION_STATUS_ORDER (Stripe's `created` has whole seconds only)."""
    c = T_SUBSCRIPTIONS.c
    order = stripe_objects.SUBSCRIPTION_STATUS_ORDER
    stored_end = func.coalesce(c.current_period_end_ms, 0)
    end = period_end_ms or 0
    stored_rank = case(*((c.status == s, i) for i, s in enumerate(order)), else_=len(order))
    rank = order.index(status) if status in order else len(order)
    return or_(
        c.updated_at_ms < created_ms,
        and_(
            c.updated_at_ms == created_ms,
            or_(stored_end < end, and_(stored_end == end, stored_rank <= rank)),
        ),
    )


def _previous_period(conn: Connection, pid: str) -> list[Any]:
    """The plan purchases of the same subscription and credit type for the period before,
    first granted first: its own invoice's, then an upgrade's top-up."""
    p = T_PURCHASES.c
    cur = conn.execute(select(T_PURCHASES).where(p.id == pid)).one()
    same = (
        p.stripe_subscription_id == cur.stripe_subscription_id,
        p.credit_type == cur.credit_type,
        p.source == "plan",
        p.status != "pending",
    )
    end = conn.execute(
        select(func.max(p.period_end_ms)).where(*same, p.period_end_ms < cur.period_end_ms)
    ).scalar_one_or_none()
    if end is None:
        return []
    return list(
        conn.execute(
            select(T_PURCHASES).where(*same, p.period_end_ms == end).order_by(p.created_at_ms, p.id)
        ).all()
    )


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
