"""Finding accounts in the synced SQL, for the admin dashboard, and their settings
(status, overdraft limit, email, metadata, own rate limits: PATCH /v1/accounts/{id}),
saved in SQL then put in force in Redis (put_in_force)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import Engine, select
from sqlalchemy.engine import Connection

from meter import rate_limits
from sync import audit
from sync.db import write_transaction
from sync.in_force import until_agreed
from sync.models import T_ACCOUNTS, T_WALLETS

SEARCH_RESULTS_MAX: Final = 50  # one screen; a narrower search finds the rest
SEARCH_TEXT_MAX: Final = 128  # an account id is at most 128 characters (models.ACCOUNT)


@dataclass(frozen=True)
class WalletRow:
    credit_type: str
    balance: int
    debt: int
    held: int


@dataclass(frozen=True)
class AccountRow:
    id: str
    created_at_ms: int
    flagged: bool
    suspended: bool
    wallets: list[WalletRow] = field(default_factory=list)


def search_accounts(engine: Engine, text: str, limit: int = SEARCH_RESULTS_MAX) -> list[AccountRow]:
    """Accounts whose id contains `text` (every account for ""), by id, with their synced
    wallets; `%` and `_` match themselves."""
    assert 1 <= limit <= SEARCH_RESULTS_MAX, limit
    query = select(T_ACCOUNTS).order_by(T_ACCOUNTS.c.id).limit(limit)
    if text:
        query = query.where(T_ACCOUNTS.c.id.contains(text[:SEARCH_TEXT_MAX], autoescape=True))
    with engine.connect() as conn:
        accounts = conn.execute(query).all()
        ids = [a.id for a in accounts]
        wallets = conn.execute(
            select(T_WALLETS)
            .where(T_WALLETS.c.account_id.in_(ids))
            .order_by(T_WALLETS.c.account_id, T_WALLETS.c.credit_type)
        ).all()
    by_account: dict[str, list[WalletRow]] = {}
    for w in wallets:
        by_account.setdefault(w.account_id, []).append(
            WalletRow(w.credit_type, w.balance, w.debt, w.held)
        )
    return [
        AccountRow(
            a.id,
            a.created_at_ms,
            bool(a.flagged),
            a.status == "suspended",
            by_account.get(a.id, []),
        )
        for a in accounts
    ]


def account_exists(engine: Engine, account_id: str) -> bool:
    """Whether the account was ever touched (its first touch inserts the row)."""
    with engine.connect() as conn:
        found = conn.execute(select(T_ACCOUNTS.c.id).where(T_ACCOUNTS.c.id == account_id)).first()
    return found is not None


SETTINGS_FIELDS: Final = ("status", "overdraft_limit", "email", "metadata", "rate_limits")


@dataclass(frozen=True)
class AccountSettings:
    id: str
    status: str  # active | suspended
    overdraft_limit: int
    email: str | None
    metadata: dict[str, Any] | None
    created_at_ms: int
    # The account's own rate limits {tool or "*": "N/unit"}, beating the catalog's
    # (meter.rate_limits); {} when it has none.
    rate_limits: dict[str, str] = field(default_factory=dict)

    @property
    def in_redis(self) -> dict[str, Any]:
        """What Redis keeps of the settings: the meter's set_account arguments."""
        return {
            "overdraft_limit": self.overdraft_limit,
            "suspended": self.status == "suspended",
            "rate_limits": self.rate_limits,
        }


def _settings(row: Any) -> AccountSettings:
    return AccountSettings(
        id=row.id,
        status=row.status,
        overdraft_limit=row.overdraft_limit,
        email=row.email,
        metadata=json.loads(row.metadata) if row.metadata else None,
        created_at_ms=row.created_at_ms,
        rate_limits=json.loads(row.rate_limits) if row.rate_limits else {},
    )


def _read(conn: Connection, account_id: str, *, lock: bool = False) -> AccountSettings | None:
    query = select(T_ACCOUNTS).where(T_ACCOUNTS.c.id == account_id)
    row = conn.execute(query.with_for_update() if lock else query).first()
    return None if row is None else _settings(row)


def merged_rate_limits(
    current: Mapping[str, str], changes: Mapping[str, str | None]
) -> dict[str, str]:
    """The account's own rate limits after a PATCH: a tool given a limit gets it, a tool
    given None loses its own (the catalog's applies again), the others keep theirs."""
    out = {tool: text for tool, text in current.items() if tool not in changes}
    out.update({tool: text for tool, text in changes.items() if text is not None})
    return rate_limits.check_overrides(out)


def get_settings(engine: Engine, account_id: str) -> AccountSettings | None:
    """The account's settings; None for an account never touched (a read creates nothing)."""
    with engine.connect() as conn:
        return _read(conn, account_id)


def update_settings(
    engine: Engine, actor: str, account_id: str, changes: dict[str, Any]
) -> AccountSettings | None:
    """Saves `changes` (validated by the caller; a None email or metadata clears it;
    rate_limits merge, merged_rate_limits) with their audit row in one transaction -> the
    new settings; None for an unknown account, which is never created here. InvalidArgument
    when the merged rate limits are too many."""
    assert set(changes) <= set(SETTINGS_FIELDS), changes
    values = {k: v for k, v in changes.items() if k not in ("metadata", "rate_limits")}
    if "metadata" in changes:
        meta = changes["metadata"]
        values["metadata"] = None if meta is None else json.dumps(meta, separators=(",", ":"))

    def txn(conn: Connection) -> AccountSettings | None:
        # Locked: two PATCHes of rate limits merge into what the other committed.
        current = _read(conn, account_id, lock="rate_limits" in changes)
        if current is None:
            return None
        if "rate_limits" in changes:
            rates = merged_rate_limits(current.rate_limits, changes["rate_limits"])
            values["rate_limits"] = json.dumps(rates, sort_keys=True) if rates else None
        if values:  # an empty PATCH changes nothing and is not audited
            conn.execute(T_ACCOUNTS.update().where(T_ACCOUNTS.c.id == account_id).values(values))
            audit.record_in(conn, actor, "account.patch", account_id, changes)
        return _read(conn, account_id)

    return write_transaction(engine, txn)


def put_in_force(
    engine: Engine, saved: AccountSettings, write: Callable[[AccountSettings], object]
) -> AccountSettings:
    """Puts settings SQL committed in force in Redis (sync/in_force): write(settings) is the
    meter's set_account -> the settings as SQL holds them. Blocking (SQL reads)."""

    def read() -> AccountSettings:
        now = get_settings(engine, saved.id)
        assert now is not None, "accounts are never deleted"
        return now

    return until_agreed(saved, write, read, lambda a, b: a.in_redis == b.in_redis)
