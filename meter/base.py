"""The public methods of Meter and AsyncMeter, written once.

Each method builds a sans-IO operation (meter.ops) and hands it to `_run`, which the sync
client drives to a result and the async client to an awaitable of it. `_then` runs a callback
after such an outcome, so the one `Hold` handle serves both clients.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from types import TracebackType
from typing import Any

from meter import bounds, ops
from meter.errors import HoldNotActive
from meter.keys import Keys
from meter.loaders import Loader
from meter.models import HoldResult, Tool
from meter.times import now_ms


class MeterBase:
    def __init__(
        self, keys: Keys, loader: Loader | None, clock_ms: Any = None, check_clock: Any = None
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

    def _run(self, op: ops.Op[Any]) -> Any:
        raise NotImplementedError

    def _then(self, outcome: Any, callback: Callable[[], None]) -> Any:
        """Calls callback once outcome (a result, or an awaitable of it) has succeeded."""
        raise NotImplementedError

    def _open_hold(self, op: ops.Op[HoldResult]) -> Any:
        raise NotImplementedError

    def balance(self, account_id: str, credit_types: list[str] | None = None) -> Any:
        """Balances of the account's wallets (default: every credit type it may have)."""
        return self._run(ops.balance(self._env, account_id, credit_types))

    def hold(
        self,
        account_id: str,
        tool: str,
        *,
        quantity: int = 1,
        amount: int | None = None,
        ttl_s: int = bounds.HOLD_TTL_S_DEFAULT,
        idempotency_key: str | None = None,
    ) -> Any:
        """Reserves credits -> a Hold: `with m.hold(...) as h: ... h.settle(cost)` (sync), or
        `async with m.hold(...) as h: ... await h.settle(cost)` (async)."""
        op = ops.hold(
            self._env,
            account_id,
            tool,
            quantity=quantity,
            amount=amount,
            ttl_s=ttl_s,
            idempotency_key=idempotency_key,
        )
        return self._open_hold(op)

    def charge(
        self,
        account_id: str,
        tool: str,
        quantity: int = 1,
        *,
        idempotency_key: str | None = None,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Any:
        """Takes tool cost x quantity, atomically, or raises InsufficientCredits -> ChargeResult."""
        return self._run(
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

    def settle(
        self,
        hold_id: str,
        amount: int | None = None,
        *,
        idempotency_key: str | None = None,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        owner: tuple[str, str] | None = None,
    ) -> Any:
        """Charges a hold (default: its amount) and releases the rest -> SettleResult."""
        return self._run(
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

    def release(
        self,
        hold_id: str,
        *,
        idempotency_key: str | None = None,
        owner: tuple[str, str] | None = None,
    ) -> Any:
        """Ends a hold without charging -> ReleaseResult."""
        return self._run(
            ops.release(self._env, hold_id, idempotency_key=idempotency_key, owner=owner)
        )

    def extend(
        self,
        hold_id: str,
        ttl_s: int,
        *,
        idempotency_key: str | None = None,
        owner: tuple[str, str] | None = None,
    ) -> Any:
        """Heartbeat: the hold now expires ttl_s from now -> ExtendResult."""
        return self._run(
            ops.extend(self._env, hold_id, ttl_s, idempotency_key=idempotency_key, owner=owner)
        )

    def refund(
        self,
        charge_id: str,
        amount: int | None = None,
        *,
        reason: str | None = None,
        idempotency_key: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Any:
        """Returns all (default) or part of a charge to its grants -> RefundResult."""
        return self._run(
            ops.refund(
                self._env,
                charge_id,
                amount,
                reason=reason,
                idempotency_key=idempotency_key,
                metadata=metadata,
            )
        )

    def grant(
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
    ) -> Any:
        """Adds credits as a new grant; debt is paid first -> GrantResult."""
        return self._run(
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

    def adjust(
        self,
        account_id: str,
        credit_type: str,
        amount: int,
        *,
        reason: str,
        category: str = "promotional",
        idempotency_key: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Any:
        """An admin's signed change with a reason -> AdjustResult."""
        return self._run(
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

    def clawback(
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
    ) -> Any:
        """Takes back credits up to a running total per reference -> ClawbackResult."""
        return self._run(
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

    def set_tools(self, tools: list[Tool], *, replace: bool = False) -> Any:
        """Writes tools into every bucket's catalog replica; effective for the next charge."""
        return self._run(ops.set_tools(self._env, tools, replace=replace))

    def set_tool(
        self, name: str, cost: int, credit_type: str = "credits", active: bool = True
    ) -> Any:
        return self.set_tools([Tool(name=name, cost=cost, credit_type=credit_type, active=active)])

    def restore_idempotency(self, account_id: str, used: tuple[tuple[str, int], ...]) -> Any:
        """Marks (key, expires_at_ms) pairs SQL holds as answered from SQL -> count written."""
        return self._run(ops.restore_idempotency(self._env, account_id, used))

    def expire_wallet(self, account_id: str, credit_type: str) -> Any:
        """Expires the wallet's due grants and holds now (the sweep's unit of work)."""
        return self._run(
            ops.expire_wallet(self._env, self.keys.bucket(account_id), account_id, credit_type)
        )


class Hold:
    """An open hold. Its methods answer like its meter's (a result, or an awaitable of it).
    Leaving its `with` / `async with` block without settle() releases it: credits are only
    charged by an explicit settle."""

    def __init__(self, meter: MeterBase, result: HoldResult) -> None:
        self.meter = meter
        self.result = result
        self.id = result.id
        self.done = False

    @property
    def _owner(self) -> tuple[str, str]:
        return self.result.account_id, self.result.credit_type

    def _mark_done(self) -> None:
        self.done = True

    def settle(self, amount: int | None = None, **kwargs: Any) -> Any:
        out = self.meter.settle(self.id, amount, owner=self._owner, **kwargs)
        return self.meter._then(out, self._mark_done)

    def release(self, **kwargs: Any) -> Any:
        out = self.meter.release(self.id, owner=self._owner, **kwargs)
        return self.meter._then(out, self._mark_done)

    def extend(self, ttl_s: int, **kwargs: Any) -> Any:
        return self.meter.extend(self.id, ttl_s, owner=self._owner, **kwargs)

    def __enter__(self) -> Hold:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.done:
            with contextlib.suppress(HoldNotActive):  # expired meanwhile: nothing is reserved
                self.release()
