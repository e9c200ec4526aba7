"""Typed results of the meter operations and the snapshots loaders hand in. Amounts are ints."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class GrantPart:
    """One grant's share of an entry: signed delta and what the grant holds after.

    grant_id "debt" is the wallet's debt as a pseudo-grant (remaining_after = -debt).
    """

    grant_id: str
    delta: int
    remaining_after: int


@dataclass(frozen=True, slots=True)
class ChargeResult:
    id: str
    account_id: str
    tool: str
    credit_type: str
    amount: int
    balance: int
    available: int
    held: int
    breakdown: tuple[GrantPart, ...]
    replayed: bool


@dataclass(frozen=True, slots=True)
class ChargeCheck:
    """A dry run of a charge (Autumn's `check`): whether it would succeed now, its price and
    the wallet as it is; nothing changed. reason is None when it would succeed, else the
    slug of the error the charge would get ("insufficient-credits")."""

    account_id: str
    tool: str
    credit_type: str
    would_succeed: bool
    amount: int
    balance: int
    available: int
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class HoldResult:
    id: str
    account_id: str
    tool: str
    credit_type: str
    amount: int
    expires_at_ms: int
    balance: int
    available: int
    held: int
    replayed: bool


@dataclass(frozen=True, slots=True)
class SettleResult:
    entry_id: str
    hold_id: str
    charged: int
    released: int
    balance: int
    available: int
    held: int
    replayed: bool


@dataclass(frozen=True, slots=True)
class ReleaseResult:
    hold_id: str
    released: int
    balance: int
    available: int
    held: int
    replayed: bool


@dataclass(frozen=True, slots=True)
class ExtendResult:
    hold_id: str
    expires_at_ms: int
    replayed: bool


@dataclass(frozen=True, slots=True)
class RefundResult:
    id: str
    charge_id: str
    amount: int
    balance: int
    available: int
    held: int
    refunded_total: int
    breakdown: tuple[GrantPart, ...]
    replayed: bool


@dataclass(frozen=True, slots=True)
class GrantResult:
    id: str
    grant_id: str
    amount: int
    balance: int
    available: int
    held: int
    replayed: bool


@dataclass(frozen=True, slots=True)
class ClawbackResult:
    id: str | None  # the clawback entry; None when the running total was already reached
    amount: int  # credits taken back by this call
    total: int  # credits taken back for the reference so far
    balance: int
    available: int
    held: int


@dataclass(frozen=True, slots=True)
class AdjustResult:
    id: str
    amount: int
    balance: int
    available: int
    held: int
    replayed: bool


@dataclass(frozen=True, slots=True)
class GrantInfo:
    id: str
    remaining: int
    priority: int
    expires_at_ms: int  # 0 = never expires
    category: str  # paid | promotional


@dataclass(frozen=True, slots=True)
class WalletBalance:
    credit_type: str
    balance: int
    available: int
    held: int
    debt: int
    overdraft_limit: int
    grants: tuple[GrantInfo, ...]


@dataclass(frozen=True, slots=True)
class AccountBalance:
    account_id: str
    wallets: tuple[WalletBalance, ...]

    def wallet(self, credit_type: str) -> WalletBalance | None:
        return next((w for w in self.wallets if w.credit_type == credit_type), None)


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    cost: int
    credit_type: str
    active: bool = True
    display_name: str = ""
    description: str = ""
    rate_limit: str = ""  # "N/second|minute|hour" per (account, tool), "" none (meter.rate_limits)


@dataclass(frozen=True, slots=True)
class HoldSnapshot:
    id: str
    amount: int
    expires_at_ms: int
    tool: str


@dataclass(frozen=True, slots=True)
class WalletSnapshot:
    """A wallet as the durable store knows it, for hydration into Redis."""

    overdraft_limit: int = 0
    suspended: bool = False  # the account's status (SQL accounts.status)
    debt: int = 0
    grants: tuple[GrantInfo, ...] = field(default_factory=tuple)
    holds: tuple[HoldSnapshot, ...] = field(default_factory=tuple)
    # Alert thresholds (SQL wallet_thresholds; None = none): lua/includes/crossings.
    low_threshold: int | None = None
    topup_threshold: int | None = None
    # Idempotency keys the account used within the TTL, as (key, expires_at_ms): restored as
    # "answered from SQL" markers before the wallet is written (lua/idem_restore.lua).
    idempotency: tuple[tuple[str, int], ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class StoredResult:
    """What SQL keeps of a request that used an idempotency key: its ledger entry, or the
    hold it opened (kind "hold"). Enough to answer a retry after Redis lost its data."""

    kind: str  # a ledger kind (charge, refund, grant, adjustment...) or "hold"
    id: str  # the entry id, or the hold id
    credit_type: str
    amount: int  # the ledger's signed amount; a hold's reserved amount
    balance_after: int  # for a hold: the wallet's balance when it opened
    tool: str | None = None
    quantity: int | None = None
    breakdown: str = ""
    reference_id: str | None = None
    hold_id: str | None = None  # a settle's charge entry
    expires_at_ms: int | None = None  # holds
    refunded_total: int = 0  # refunds: the charge's refunds so far, this one included


@dataclass(frozen=True, slots=True)
class ExpireResult:
    grants_expired: int
    holds_expired: int


@dataclass(frozen=True, slots=True)
class ChargePart:
    """What a charge took from one grant and can still give back to it."""

    grant_id: str  # "debt" for the part that went into debt
    refundable: int
    priority: int
    expires_at_ms: int  # 0 = never expires
    category: str  # p (paid) | r (promotional) | d (debt), as in the Redis record


@dataclass(frozen=True, slots=True)
class ChargeRecord:
    """A charge as the durable store knows it, to refund it after Redis forgot it."""

    account_id: str
    credit_type: str
    tool: str
    charged: int
    refunded: int
    parts: tuple[ChargePart, ...]
