"""The quote each credits checkout was sold at, stored by Checkout Session id when the session
is created (SPEC §9, issue 13 item 15).

Stripe's event metadata is ours, echoed back: signed, but written by whoever created the
session. The grant of a completed session follows the quote stored here, and the webhook
compares its `amount_total` with `amount_minor` before granting.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Engine, select

from meter.times import now_ms
from sync.db import write_transaction
from sync.models import T_CHECKOUT_QUOTES
from sync.pricing import Quote
from sync.sqlops import insert_ignore


@dataclass(frozen=True, slots=True)
class StoredQuote:
    session_id: str
    account_id: str
    credit_type: str
    credits: int
    amount_minor: int  # what the session charges, before Stripe's own conversions
    currency: str
    pack_id: str | None


def store_quote(engine: Engine, session_id: str, account_id: str, quote: Quote) -> None:
    """Keeps the quote of a new session. A replayed session (same idempotency key, same id)
    keeps its first quote: the body of a replayed request cannot differ."""
    write_transaction(
        engine,
        lambda conn: conn.execute(
            insert_ignore(conn, T_CHECKOUT_QUOTES),
            [
                {
                    "session_id": session_id,
                    "account_id": account_id,
                    "credit_type": quote.credit_type,
                    "credits": quote.credits,
                    "amount_minor": quote.amount,
                    "currency": quote.currency,
                    "pack_id": quote.pack_id,
                    "created_at_ms": now_ms(),
                }
            ],
        ),
    )


def quote_for(conn: Connection, session_id: str) -> StoredQuote | None:
    """The quote stored for a Checkout Session (None: not created by this creditmeter, or
    created before quotes were kept)."""
    row = conn.execute(
        select(T_CHECKOUT_QUOTES).where(T_CHECKOUT_QUOTES.c.session_id == session_id)
    ).first()
    if row is None:
        return None
    return StoredQuote(
        session_id=row.session_id,
        account_id=row.account_id,
        credit_type=row.credit_type,
        credits=int(row.credits),
        amount_minor=int(row.amount_minor),
        currency=row.currency,
        pack_id=row.pack_id,
    )
