"""The durable schema (SQLAlchemy 2 typed models). Alembic migrations mirror it.

Amounts are integers; times are integer milliseconds since the epoch (`*_ms`), as in the
journal, so reports bucket by day with integer division on every dialect.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ID = String(64)  # entry, grant, hold ids (UUIDv7) and external ids
ACCOUNT = String(128)
CREDIT_TYPE = String(32)
TOOL = String(64)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[str] = mapped_column(ACCOUNT, primary_key=True)
    overdraft_limit: Mapped[int] = mapped_column(BigInteger, default=0)
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)  # a dispute was opened
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    # active | suspended (charges and holds refused); set by PATCH /v1/accounts/{id}
    status: Mapped[str] = mapped_column(String(16), default="active", server_default="active")
    email: Mapped[str | None] = mapped_column(String(254))  # RFC 5321's path limit
    metadata_json: Mapped[str | None] = mapped_column("metadata", Text)
    # The account's own rate limits, JSON {"TOOL" or "*": "N/unit"} (meter.rate_limits);
    # NULL: none, the catalog's apply.
    rate_limits: Mapped[str | None] = mapped_column(Text)


class Wallet(Base):
    """The synced balance snapshot, changed only by flushed entries (in their transaction)."""

    __tablename__ = "wallets"
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    credit_type: Mapped[str] = mapped_column(CREDIT_TYPE, primary_key=True)
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    debt: Mapped[int] = mapped_column(BigInteger, default=0)
    held: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at_ms: Mapped[int] = mapped_column(BigInteger)


class WalletThreshold(Base):
    """A wallet's alert threshold (sync/thresholds.py): kind low is the balance.low alert,
    topup is read by auto top-up. Copied onto the Redis wallet hash, whose scripts flag the
    journal entry that crosses it."""

    __tablename__ = "wallet_thresholds"
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    credit_type: Mapped[str] = mapped_column(CREDIT_TYPE, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # low | topup
    threshold: Mapped[int] = mapped_column(BigInteger)


class Grant(Base):
    __tablename__ = "grants"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    account_id: Mapped[str] = mapped_column(ACCOUNT)
    credit_type: Mapped[str] = mapped_column(CREDIT_TYPE)
    amount: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int] = mapped_column(BigInteger)
    category: Mapped[str] = mapped_column(String(16))  # paid | promotional
    priority: Mapped[int] = mapped_column(Integer)
    expires_at_ms: Mapped[int | None] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(32))
    reference_id: Mapped[str | None] = mapped_column(String(255))
    entry_id: Mapped[str | None] = mapped_column(ID)  # the entry that created it
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    __table_args__ = (
        Index(None, "account_id", "credit_type"),
        # Liability (sync.reports) reads only the grants with credits left, not the spent
        # ones that pile up forever. Its cost: a change of remainder is never a HOT update in
        # PostgreSQL (few were: pages fill up), about 2% of the flush's rate when measured.
        Index(
            "ix_grants_live",
            "credit_type",
            "expires_at_ms",
            postgresql_where=text("remaining > 0"),
            sqlite_where=text("remaining > 0"),
        ),
    )


class LedgerEntry(Base):
    """One balance change, keyed by the id its script gave it: a replay inserts nothing."""

    __tablename__ = "ledger_entries"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    bucket: Mapped[int] = mapped_column(Integer)
    stream_id: Mapped[str] = mapped_column(String(40))  # sortable, see sync.journal
    account_id: Mapped[str] = mapped_column(ACCOUNT)
    credit_type: Mapped[str] = mapped_column(CREDIT_TYPE)
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(BigInteger)
    balance_after: Mapped[int] = mapped_column(BigInteger)
    tool: Mapped[str | None] = mapped_column(TOOL)
    quantity: Mapped[int | None] = mapped_column(BigInteger)
    hold_id: Mapped[str | None] = mapped_column(ID)
    breakdown: Mapped[str | None] = mapped_column(Text)  # "grant:delta:remaining_after;..."
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    reference_id: Mapped[str | None] = mapped_column(String(255))
    source: Mapped[str | None] = mapped_column(String(32))
    description: Mapped[str | None] = mapped_column(Text)
    metadata_json: Mapped[str | None] = mapped_column("metadata", Text)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    __table_args__ = (
        Index(None, "account_id", "credit_type", "created_at_ms"),
        # Every report over a time range (sync.reports: usage, top consumers, liability
        # series) reads this index alone, never the table: one wide index costs the flush
        # less than one per report. It replaced (created_at_ms, tool), which only reports
        # read; the flush's rate moved by about 2% (within noise) when measured.
        Index(
            "ix_ledger_entries_reports",
            "created_at_ms",
            "kind",
            "credit_type",
            "tool",
            "account_id",
            "amount",
        ),
        Index(None, "bucket", "stream_id"),
        # A retry after Redis lost its data is answered from SQL (migration 0004).
        Index("ix_ledger_entries_account_idempotency", "account_id", "idempotency_key"),
    )


class Hold(Base):
    __tablename__ = "holds"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    account_id: Mapped[str] = mapped_column(ACCOUNT)
    credit_type: Mapped[str] = mapped_column(CREDIT_TYPE)
    tool: Mapped[str] = mapped_column(TOOL)
    quantity: Mapped[int | None] = mapped_column(BigInteger)
    amount: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))  # active | settled | released | expired
    expires_at_ms: Mapped[int] = mapped_column(BigInteger)
    charged: Mapped[int | None] = mapped_column(BigInteger)
    charge_entry_id: Mapped[str | None] = mapped_column(ID)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    updated_at_ms: Mapped[int] = mapped_column(BigInteger)
    __table_args__ = (
        Index(None, "status", "expires_at_ms"),
        Index(None, "account_id", "credit_type"),
        Index("ix_holds_account_idempotency", "account_id", "idempotency_key"),
    )


class HoldEvent(Base):
    """Every hold state change; keyed by its journal position, so a replay inserts nothing."""

    __tablename__ = "hold_events"
    hold_id: Mapped[str] = mapped_column(ID, primary_key=True)
    stream_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    bucket: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(BigInteger)
    expires_at_ms: Mapped[int | None] = mapped_column(BigInteger)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)


class Tool(Base):
    __tablename__ = "tools"
    name: Mapped[str] = mapped_column(TOOL, primary_key=True)
    display_name: Mapped[str] = mapped_column(String(255), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    cost: Mapped[int] = mapped_column(BigInteger)
    credit_type: Mapped[str] = mapped_column(CREDIT_TYPE)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # "N/second|minute|hour" per account (meter.rate_limits), "" none; 32 fits the longest
    rate_limit: Mapped[str] = mapped_column(String(32), default="", server_default="")
    updated_at_ms: Mapped[int] = mapped_column(BigInteger)


class WelcomeGrant(Base):
    """What a new account receives on first touch, per credit type (catalog)."""

    __tablename__ = "welcome_grants"
    credit_type: Mapped[str] = mapped_column(CREDIT_TYPE, primary_key=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    category: Mapped[str] = mapped_column(String(16), default="promotional")
    priority: Mapped[int] = mapped_column(Integer, default=50)
    expires_in_s: Mapped[int | None] = mapped_column(BigInteger)


class Pack(Base):
    __tablename__ = "packs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # credits-small
    display_name: Mapped[str] = mapped_column(String(255), default="")
    credit_type: Mapped[str] = mapped_column(CREDIT_TYPE)
    credits: Mapped[int] = mapped_column(BigInteger)
    unit_amount: Mapped[int] = mapped_column(BigInteger)  # price, minor units
    currency: Mapped[str] = mapped_column(String(3))
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class PriceSlab(Base):
    __tablename__ = "price_slabs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    credit_type: Mapped[str] = mapped_column(CREDIT_TYPE)
    mode: Mapped[str] = mapped_column(String(16))  # volume | graduated
    from_credits: Mapped[int] = mapped_column(BigInteger)
    to_credits: Mapped[int | None] = mapped_column(BigInteger)  # None = no upper bound
    unit_amount: Mapped[int] = mapped_column(BigInteger)  # minor units per credit
    currency: Mapped[str] = mapped_column(String(3))
    min_credits: Mapped[int] = mapped_column(BigInteger, default=1)  # minimum purchase
    __table_args__ = (Index(None, "credit_type", "from_credits"),)


class Plan(Base):
    __tablename__ = "plans"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(255), default="")
    stripe_price_id: Mapped[str] = mapped_column(String(255), unique=True)
    allocations_json: Mapped[str] = mapped_column("allocations", Text)  # {credit_type: credits}
    expire_at_period_end: Mapped[bool] = mapped_column(Boolean, default=True)
    rollover_cap: Mapped[int] = mapped_column(BigInteger, default=0)
    discount_percent: Mapped[int] = mapped_column(Integer, default=0)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class Subscription(Base):
    __tablename__ = "subscriptions"
    id: Mapped[str] = mapped_column(String(255), primary_key=True)  # Stripe subscription id
    account_id: Mapped[str] = mapped_column(ACCOUNT, index=True)
    plan_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32))
    current_period_start_ms: Mapped[int | None] = mapped_column(BigInteger)
    current_period_end_ms: Mapped[int | None] = mapped_column(BigInteger)
    updated_at_ms: Mapped[int] = mapped_column(BigInteger)


class Purchase(Base):
    __tablename__ = "purchases"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    account_id: Mapped[str] = mapped_column(ACCOUNT, index=True)
    credit_type: Mapped[str] = mapped_column(CREDIT_TYPE)
    credits: Mapped[int] = mapped_column(BigInteger)
    pack_id: Mapped[str | None] = mapped_column(String(64))
    plan_id: Mapped[str | None] = mapped_column(String(64))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    # pending (row stored, grant not yet confirmed) | paid | partially_refunded | refunded |
    # disputed
    status: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(
        String(16), default="pack"
    )  # pack | custom | plan | rollover | topup
    stripe_session_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    stripe_invoice_id: Mapped[str | None] = mapped_column(String(255), index=True)
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(255), index=True)
    period_end_ms: Mapped[int | None] = mapped_column(BigInteger)  # plan grants expire then
    stripe_payment_intent_id: Mapped[str | None] = mapped_column(String(255), index=True)
    refunded_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    clawed_back: Mapped[int] = mapped_column(BigInteger, default=0)  # credits taken back
    # Credits given back since (a dispute won, a refund failed): clawed_back - returned is held.
    returned: Mapped[int] = mapped_column(BigInteger, default=0)
    # Adaptive Pricing: what the customer paid, in their currency; amount_minor and currency
    # are the catalog's price in the catalog's (settlement) currency. None: no conversion.
    presentment_amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    presentment_currency: Mapped[str | None] = mapped_column(String(3))
    grant_id: Mapped[str | None] = mapped_column(ID)
    created_at_ms: Mapped[int] = mapped_column(BigInteger, index=True)


class StripeCustomer(Base):
    """The one Stripe customer of an account, created on its first checkout."""

    __tablename__ = "stripe_customers"
    account_id: Mapped[str] = mapped_column(ACCOUNT, primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(255), unique=True)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)


class CheckoutQuote(Base):
    """What a credits checkout was priced at on our side, by its Checkout Session: the
    grant follows this quote, never the credits the event's metadata claims."""

    __tablename__ = "checkout_quotes"
    session_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    account_id: Mapped[str] = mapped_column(ACCOUNT)
    credit_type: Mapped[str] = mapped_column(CREDIT_TYPE)
    credits: Mapped[int] = mapped_column(BigInteger)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    pack_id: Mapped[str | None] = mapped_column(String(64))
    created_at_ms: Mapped[int] = mapped_column(BigInteger)


class StripePayment(Base):
    """Running totals Stripe reported for one payment, kept even before its purchase is
    known (a refund may be delivered before the checkout it refunds)."""

    __tablename__ = "stripe_payments"
    payment_intent_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    charge_refunded_minor: Mapped[int] = mapped_column(BigInteger, default=0)  # max seen
    disputed_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at_ms: Mapped[int] = mapped_column(BigInteger)


class StripeRefund(Base):
    """One refund by id: refund.created and charge.refunded may both report it."""

    __tablename__ = "stripe_refunds"
    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    payment_intent_id: Mapped[str] = mapped_column(String(255), index=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    # pending | succeeded | failed | canceled: a failed or canceled refund returned nothing.
    status: Mapped[str] = mapped_column(String(16), default="succeeded")


class StripeDispute(Base):
    """One dispute by id, in its latest known state (an inquiry, open, won, lost...)."""

    __tablename__ = "stripe_disputes"
    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    payment_intent_id: Mapped[str] = mapped_column(String(255), index=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(32))
    updated_at_ms: Mapped[int] = mapped_column(BigInteger)


class StripeInvoicePayment(Base):
    """Which payment paid which invoice: from 2025-03-31 on the invoice no longer names its
    payment intent, an `invoice_payment` does, in its own event."""

    __tablename__ = "stripe_invoice_payments"
    invoice_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    payment_intent_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)


class StripeEvent(Base):
    __tablename__ = "stripe_events"
    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(128))
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # received | applied | ignored | failed
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    received_at_ms: Mapped[int] = mapped_column(BigInteger)
    applied_at_ms: Mapped[int | None] = mapped_column(BigInteger)


class ApiKey(Base):
    """Only a keyed hash of the key and a short visible prefix are stored."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = mapped_column(String(128), unique=True)
    scope: Mapped[str] = mapped_column(String(16))  # meter | read | admin
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    revoked_at_ms: Mapped[int | None] = mapped_column(BigInteger)
    last_used_at_ms: Mapped[int | None] = mapped_column(BigInteger)


class AuditLog(Base):
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    actor: Mapped[str] = mapped_column(String(255))  # api key id, or "cli"
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(255))
    detail_json: Mapped[str] = mapped_column("detail", Text, default="{}")
    created_at_ms: Mapped[int] = mapped_column(BigInteger, index=True)


class DeadLetter(Base):
    """A journal entry that could not be written, with why; kept, never dropped."""

    __tablename__ = "dead_letters"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    journal: Mapped[str] = mapped_column(String(255))  # the stream key
    stream_id: Mapped[str] = mapped_column(String(40))
    fields_json: Mapped[str] = mapped_column("fields", Text)
    error: Mapped[str] = mapped_column(Text)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    __table_args__ = (UniqueConstraint("journal", "stream_id"),)


class SyncCursor(Base):
    """The highest journal position of a stream SQL has committed; trimming stops below it."""

    __tablename__ = "sync_cursors"
    journal: Mapped[str] = mapped_column(String(255), primary_key=True)  # the stream key
    stream_id: Mapped[str] = mapped_column(String(40))
    updated_at_ms: Mapped[int] = mapped_column(BigInteger)


class SyncState(Base):
    """Small named values of the sync, such as the Redis dataset epoch."""

    __tablename__ = "sync_state"
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))
    updated_at_ms: Mapped[int] = mapped_column(BigInteger)


class SyncGap(Base):
    """Entries SQL has that Redis lost (a crash lost the end of its append-only file)."""

    __tablename__ = "sync_gaps"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    journal: Mapped[str] = mapped_column(String(255))
    after_stream_id: Mapped[str] = mapped_column(String(40))
    through_stream_id: Mapped[str] = mapped_column(String(40))
    lost_entries: Mapped[int] = mapped_column(Integer)
    detected_at_ms: Mapped[int] = mapped_column(BigInteger)


class GapEntry(Base):
    __tablename__ = "gap_entries"
    gap_id: Mapped[int] = mapped_column(ForeignKey("sync_gaps.id"), primary_key=True)
    entry_id: Mapped[str] = mapped_column(ID, primary_key=True)


class WebhookEndpoint(Base):
    """A receiver of outgoing webhooks (sync/webhooks.py). Its signing secret is written once
    and never read back out through the API or the CLI: only the sender reads it."""

    __tablename__ = "webhook_endpoints"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    events_json: Mapped[str] = mapped_column("events", Text)  # JSON list of event types
    secret: Mapped[str] = mapped_column(String(128))  # whsec_<base64>
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)


class WebhookEvent(Base):
    """The outbox: one row per fact, written in the producer's transaction; a fact emitted
    twice (a replayed flush, a redelivered Stripe event) hits `dedupe_key` and adds nothing."""

    __tablename__ = "webhook_events"
    id: Mapped[str] = mapped_column(ID, primary_key=True)  # the webhook-id header
    type: Mapped[str] = mapped_column(String(64))
    account_id: Mapped[str | None] = mapped_column(ACCOUNT)
    payload_json: Mapped[str] = mapped_column("payload", Text)
    dedupe_key: Mapped[str] = mapped_column(String(255), unique=True)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)


class WebhookDelivery(Base):
    """One event to one endpoint: what the sender did with it so far."""

    __tablename__ = "webhook_deliveries"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("webhook_events.id"))
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id"))
    status: Mapped[str] = mapped_column(String(16))  # pending | succeeded | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_response_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at_ms: Mapped[int | None] = mapped_column(BigInteger)
    delivered_at_ms: Mapped[int | None] = mapped_column(BigInteger)
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    __table_args__ = (
        UniqueConstraint("event_id", "endpoint_id"),
        # The due sweep reads pending rows by time; the others are history.
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at_ms"),
        Index(None, "endpoint_id", "created_at_ms"),
    )


class TopupRule(Base):
    """Auto top-up of one wallet (issue 16 item 4): when its available credits drop below
    `threshold`, buy `credits` with the account's saved card, at most `daily_max` times in
    24 h. Three failed attempts in a row disable it (`disabled_reason` says why)."""

    __tablename__ = "topup_rules"
    account_id: Mapped[str] = mapped_column(ACCOUNT, primary_key=True)
    credit_type: Mapped[str] = mapped_column(CREDIT_TYPE, primary_key=True)
    threshold: Mapped[int] = mapped_column(BigInteger)
    credits: Mapped[int] = mapped_column(BigInteger)
    daily_max: Mapped[int] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    disabled_reason: Mapped[str | None] = mapped_column(String(255))
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    updated_at_ms: Mapped[int] = mapped_column(BigInteger)


class TopupAttempt(Base):
    """One top-up per threshold crossing: its id is the Stripe idempotency key, derived from
    the crossing, so a crossing seen twice pays once. The price is fixed on the first run
    (credits, amount, currency), so a retried job sends Stripe the same request."""

    __tablename__ = "topup_attempts"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    account_id: Mapped[str] = mapped_column(ACCOUNT)
    credit_type: Mapped[str] = mapped_column(CREDIT_TYPE)
    crossing_id: Mapped[str] = mapped_column(String(255))
    # pending | processing (Stripe has not settled it) | succeeded | failed
    status: Mapped[str] = mapped_column(String(16))
    credits: Mapped[int | None] = mapped_column(BigInteger)
    amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    payment_intent_id: Mapped[str | None] = mapped_column(String(255))
    error_code: Mapped[str | None] = mapped_column(String(64))  # card_declined...
    error: Mapped[str | None] = mapped_column(Text)  # the last failure or retry, in words
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    updated_at_ms: Mapped[int] = mapped_column(BigInteger)
    __table_args__ = (
        UniqueConstraint("account_id", "credit_type", "crossing_id"),
        # The daily cap counts an account's attempts of the last 24 h.
        Index(None, "account_id", "credit_type", "created_at_ms"),
    )


class SavedPaymentMethod(Base):
    """The card an account's checkout saved for off-session payments (setup_future_usage),
    with the Stripe customer it is attached to; the latest checkout's replaces it."""

    __tablename__ = "saved_payment_methods"
    account_id: Mapped[str] = mapped_column(ACCOUNT, primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(255))
    payment_method_id: Mapped[str] = mapped_column(String(255))
    saved_at_ms: Mapped[int] = mapped_column(BigInteger)


def _table(model: type[Base]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


# The tables as SQLAlchemy Core sees them, for the bulk statements of the flush and loader.
T_ACCOUNTS = _table(Account)
T_WALLETS = _table(Wallet)
T_GRANTS = _table(Grant)
T_THRESHOLDS = _table(WalletThreshold)
T_LEDGER = _table(LedgerEntry)
T_HOLDS = _table(Hold)
T_HOLD_EVENTS = _table(HoldEvent)
T_TOOLS = _table(Tool)
T_WELCOME = _table(WelcomeGrant)
T_DEAD = _table(DeadLetter)
T_CURSORS = _table(SyncCursor)
T_STATE = _table(SyncState)
T_GAPS = _table(SyncGap)
T_GAP_ENTRIES = _table(GapEntry)
T_API_KEYS = _table(ApiKey)
T_PACKS = _table(Pack)
T_SLABS = _table(PriceSlab)
T_PLANS = _table(Plan)
T_SUBSCRIPTIONS = _table(Subscription)
T_PURCHASES = _table(Purchase)
T_STRIPE_EVENTS = _table(StripeEvent)
T_STRIPE_CUSTOMERS = _table(StripeCustomer)
T_CHECKOUT_QUOTES = _table(CheckoutQuote)
T_STRIPE_PAYMENTS = _table(StripePayment)
T_STRIPE_REFUNDS = _table(StripeRefund)
T_STRIPE_DISPUTES = _table(StripeDispute)
T_STRIPE_INVOICE_PAYMENTS = _table(StripeInvoicePayment)
T_AUDIT = _table(AuditLog)
T_WEBHOOK_ENDPOINTS = _table(WebhookEndpoint)
T_WEBHOOK_EVENTS = _table(WebhookEvent)
T_WEBHOOK_DELIVERIES = _table(WebhookDelivery)
T_TOPUP_RULES = _table(TopupRule)
T_TOPUP_ATTEMPTS = _table(TopupAttempt)
T_SAVED_PAYMENT_METHODS = _table(SavedPaymentMethod)
