"""Finding accounts in the synced SQL, for the admin dashboard."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from sqlalchemy import Engine, select

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
        AccountRow(a.id, a.created_at_ms, bool(a.flagged), by_account.get(a.id, []))
        for a in accounts
    ]


def account_exists(engine: Engine, account_id: str) -> bool:
    """Whether the account was ever touched (its first touch inserts the row)."""
    with engine.connect() as conn:
        found = conn.execute(select(T_ACCOUNTS.c.id).where(T_ACCOUNTS.c.id == account_id)).first()
    return found is not None
