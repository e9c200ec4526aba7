"""Where a wallet or the catalog comes from when Redis does not have it.

The SQL loader (sync/) is the real one. `NewAccountLoader` is for a Redis-only meter
(throwaway scripts, tests): it opens every unknown wallet empty, which is only right when
Redis is the whole truth. With no loader at all the meter raises `WalletNotLoaded`: never
a silent zero.
"""

from __future__ import annotations

from typing import Protocol

from meter.models import ChargeRecord, StoredResult, Tool, WalletSnapshot


class Loader(Protocol):
    def load_wallet(
        self, account_id: str, credit_type: str, *, create: bool = True
    ) -> WalletSnapshot | None:
        """The wallet as the durable store has it; creates the account on first touch, or
        answers None for an account it does not know when `create` is off (reads)."""
        ...

    def load_catalog(self) -> list[Tool]:
        """Every tool, to restore missing catalog replicas."""
        ...

    def account_credit_types(self, account_id: str) -> list[str]:
        """Credit types the account has wallets of in the durable store."""
        ...

    def load_charge(self, charge_id: str) -> ChargeRecord | None:
        """A charge Redis no longer has a record of (kept 25 h), for a refund."""
        ...

    def load_hold_owner(self, hold_id: str) -> tuple[str, str] | None:
        """(account_id, credit_type) of an active hold Redis lost with its wallet."""
        ...

    def load_stored_result(self, account_id: str, idempotency_key: str) -> StoredResult | None:
        """What a request with this key did, when Redis lost its record (idem_restore.lua)."""
        ...


class NewAccountLoader:
    def __init__(self, tools: list[Tool] | None = None, overdraft_limit: int = 0) -> None:
        self._tools = list(tools or [])
        self._overdraft_limit = overdraft_limit

    def load_wallet(
        self, account_id: str, credit_type: str, *, create: bool = True
    ) -> WalletSnapshot | None:
        return WalletSnapshot(overdraft_limit=self._overdraft_limit) if create else None

    def load_catalog(self) -> list[Tool]:
        return list(self._tools)

    def account_credit_types(self, account_id: str) -> list[str]:
        return []

    def load_charge(self, charge_id: str) -> ChargeRecord | None:
        return None

    def load_hold_owner(self, hold_id: str) -> tuple[str, str] | None:
        return None

    def load_stored_result(self, account_id: str, idempotency_key: str) -> StoredResult | None:
        return None
