"""The public methods of AsyncMeter and of its open holds, each typed with its result.

Each method builds a sans-IO operation (meter.ops) and awaits `_drive`, which AsyncMeter
implements. meter/api_sync.py, the same methods for Meter, is generated from this file by
meter/unasync.py (as httpcore does): edit this one and run `python -m meter.unasync`;
tests/meter/test_unasync.py fails while the generated file is not current.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal, TypeVar, overload

from meter import bounds, ops
from meter.errors import HoldNotActive, InvalidArgument
from meter.keys import Keys
from meter.loaders import Loader
from meter.models import (
    AccountBalance,
    AdjustResult,
    ChargeCheck,
    ChargeResult,
    ClawbackResult,
    ExpireResult,
    ExtendResult,
    GrantResult,
    HoldResult,
    RefundResult,
    ReleaseResult,
    SettleResult,
    Tool,
)
from meter.times import now_ms

R = TypeVar("R")


class AsyncMeterAPI:
    def __init__(
        self,
        keys: Keys,
        loader: Loader | None,
        clock_ms: Callable[[], int] | None = None,
        check_clock: bool | None = None,
    ) -> None:
        """check_clock: refuse (ClockSkew) a clock further than bounds.CLOCK_SKEW_MS_MAX from
        Redis TIME in every wallet-changing script. None (default) checks the wall clock and
        trusts a clock_ms the caller passes (tests and simulations drive time themselves)."""
        self.keys = keys
        self.loader = loader
        checked = clock_ms is None if check_clock is None else bool(check_clock)
        self._env = ops.Env(
            keys,
            clock_ms=now_ms if clock_ms is None else clock_ms,
            clock_skew_ms_max=bounds.CLOCK_SKEW_MS_MAX if checked else None,
        )

    async def _drive(self, op: ops.Op[R]) -> R:
        """Performs the operation's requests until it returns its result."""
        raise NotImplementedError

    async def balance(
        self, account_id: str, credit_types: list[str] | None = None
    ) -> AccountBalance:
        """Balances of the account's wallets (default: every credit type it may have)."""
        return await self._drive(ops.balance(self._env, account_id, credit_types))

    @overload
    async def charge(
        self,
        account_id: str,
        tool: str,
        quantity: int = 1,
        *,
        idempotency_key: str | None = None,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        dry_run: Literal[False] = False,
    ) -> ChargeResult: ...

    @overload
    async def charge(
        self,
        account_id: str,
        tool: str,
        quantity: int = 1,
        *,
        idempotency_key: str | None = None,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        dry_run: Literal[True],
    ) -> ChargeCheck: ...

    async def charge(
        self,
        account_id: str,
        tool: str,
        quantity: int = 1,
        *,
        idempotency_key: str | None = None,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        dry_run: bool = False,
    ) -> ChargeResult | ChargeCheck:
        """Takes tool cost x quantity, atomically, or raises InsufficientCredits.

        dry_run=True changes nothing and answers a ChargeCheck: whether the charge would
        succeed now (the same script and checks), its price and the wallet; it raises what
        the charge would raise except InsufficientCredits (would_succeed False), and takes
        no idempotency key: a dry run writes nothing, so there is nothing to replay."""
        if dry_run:
            if idempotency_key is not None:
                raise InvalidArgument("idempotency_key", "a dry run writes nothing to replay")
            return await self._drive(
                ops.charge_check(
                    self._env,
                    account_id,
                    tool,
                    quantity,
                    description=description,
                    metadata=metadata,
                )
            )
        return await self._drive(
            ops.charge(
                self._env,
                account_id,
                tool,
                quantity,
                idempotency_key=idempotency_key,
                description=description,
                metadata=metadata,
            )
        )

    async def settle(
        self,
        hold_id: str,
        amount: int | None = None,
        *,
        idempotency_key: str | None = None,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        owner: tuple[str, str] | None = None,
    ) -> SettleResult:
        """Charges a hold (default: its amount) and releases the rest."""
        return await self._drive(
            ops.settle(
                self._env,
                hold_id,
                amount,
                idempotency_key=idempotency_key,
                description=description,
                metadata=metadata,
                owner=owner,
            )
        )

    async def release(
        self,
        hold_id: str,
        *,
        idempotency_key: str | None = None,
        owner: tuple[str, str] | None = None,
    ) -> ReleaseResult:
        """Ends a hold without charging."""
        return await self._drive(
            ops.release(self._env, hold_id, idempotency_key=idempotency_key, owner=owner)
        )

    async def extend(
        self,
        hold_id: str,
        ttl_s: int,
        *,
        idempotency_key: str | None = None,
        owner: tuple[str, str] | None = None,
    ) -> ExtendResult:
        """Heartbeat: the hold now expires ttl_s from now."""
        return await self._drive(
            ops.extend(self._env, hold_id, ttl_s, idempotency_key=idempotency_key, owner=owner)
        )

    async def refund(
        self,
        charge_id: str,
        amount: int | None = None,
        *,
        reason: str | None = None,
        idempotency_key: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> RefundResult:
        """Returns all (default) or part of a charge to its grants."""
        return await self._drive(
            ops.refund(
                self._env,
                charge_id,
                amount,
                reason=reason,
                idempotency_key=idempotency_key,
                metadata=metadata,
            )
        )

    async def grant(
        self,
        account_id: str,
        credit_type: str,
        amount: int,
        *,
        category: str = "promotional",
        priority: int = bounds.PRIORITY_DEFAULT,
        expires_at_ms: int | None = None,
        source: str = "admin",
        reference_id: str | None = None,
        idempotency_key: str | None = None,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        grant_id: str | None = None,
    ) -> GrantResult:
        """Adds credits as a new grant; debt is paid first."""
        return await self._drive(
            ops.grant(
                self._env,
                account_id,
                credit_type,
                amount,
                category=category,
                priority=priority,
                expires_at_ms=expires_at_ms,
                source=source,
                reference_id=reference_id,
                idempotency_key=idempotency_key,
                description=description,
                metadata=metadata,
                grant_id=grant_id,
            )
        )

    async def adjust(
        self,
        account_id: str,
        credit_type: str,
        amount: int,
        *,
        reason: str,
        category: str = "promotional",
        idempotency_key: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> AdjustResult:
        """An admin's signed change with a reason."""
        return await self._drive(
            ops.adjust(
                self._env,
                account_id,
                credit_type,
                amount,
                reason=reason,
                category=category,
                idempotency_key=idempotency_key,
                metadata=metadata,
            )
        )

    async def clawback(
        self,
        account_id: str,
        credit_type: str,
        total: int,
        *,
        reference_id: str,
        known_total: int = 0,
        grant_id: str | None = None,
        reason: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> ClawbackResult:
        """Takes back credits up to a running total per reference."""
        return await self._drive(
            ops.clawback(
                self._env,
                account_id,
                credit_type,
                total,
                reference_id=reference_id,
                known_total=known_total,
                grant_id=grant_id,
                reason=reason,
                metadata=metadata,
            )
        )

    async def set_tools(self, tools: list[Tool], *, replace: bool = False) -> None:
        """Writes tools into every bucket's catalog replica; effective for the next charge."""
        await self._drive(ops.set_tools(self._env, tools, replace=replace))

    async def set_tool(
        self, name: str, cost: int, credit_type: str = "credits", active: bool = True
    ) -> None:
        await self.set_tools([Tool(name=name, cost=cost, credit_type=credit_type, active=active)])

    async def set_account(self, account_id: str, *, overdraft_limit: int, suspended: bool) -> int:
        """Puts the account's overdraft limit and status (saved in SQL first) in force for
        its next charge or hold, on every wallet Redis has -> how many were updated."""
        return await self._drive(
            ops.set_account(
                self._env, account_id, overdraft_limit=overdraft_limit, suspended=suspended
            )
        )

    async def set_threshold(
        self, account_id: str, credit_type: str, kind: str, threshold: int | None
    ) -> bool:
        """Puts a wallet's alert threshold (kind low | topup; None: none), saved in SQL
        first, in force for its next change -> whether Redis had the wallet loaded."""
        return await self._drive(
            ops.set_threshold(self._env, account_id, credit_type, kind, threshold)
        )

    async def restore_idempotency(self, account_id: str, used: tuple[tuple[str, int], ...]) -> int:
        """Marks (key, expires_at_ms) pairs SQL holds as answered from SQL -> count written."""
        return await self._drive(ops.restore_idempotency(self._env, account_id, used))

    async def expire_wallet(self, account_id: str, credit_type: str) -> ExpireResult:
        """Expires the wallet's due grants and holds now (the sweep's unit of work)."""
        return await self._drive(
            ops.expire_wallet(self._env, self.keys.bucket(account_id), account_id, credit_type)
        )


class AsyncHold:
    """An open hold. Leaving its block without settle() releases it: credits are only charged
    by an explicit settle."""

    def __init__(self, meter: AsyncMeterAPI, result: HoldResult) -> None:
        self.meter = meter
        self.result = result
        self.id = result.id
        self.done = False

    @property
    def _owner(self) -> tuple[str, str]:
        return self.result.account_id, self.result.credit_type

    async def settle(
        self,
        amount: int | None = None,
        *,
        idempotency_key: str | None = None,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> SettleResult:
        out = await self.meter.settle(
            self.id,
            amount,
            idempotency_key=idempotency_key,
            description=description,
            metadata=metadata,
            owner=self._owner,
        )
        self.done = True
        return out

    async def release(self, *, idempotency_key: str | None = None) -> ReleaseResult:
        out = await self.meter.release(self.id, idempotency_key=idempotency_key, owner=self._owner)
        self.done = True
        return out

    async def extend(self, ttl_s: int, *, idempotency_key: str | None = None) -> ExtendResult:
        return await self.meter.extend(
            self.id, ttl_s, idempotency_key=idempotency_key, owner=self._owner
        )

    async def __aenter__(self) -> AsyncHold:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.done:
            with contextlib.suppress(HoldNotActive):  # expired meanwhile: nothing is reserved
                await self.release()
