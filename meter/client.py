"""Meter: the synchronous client, a thin driver of meter.ops over redis-py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import redis

from meter import bounds, ops, runner
from meter.api_sync import Hold, MeterAPI
from meter.connect import checked_redis_url, keys_from
from meter.errors import CatalogNotLoaded, WalletNotLoaded
from meter.keys import Keys
from meter.loaders import Loader
from meter.redis_conn import sync_client
from meter.settings import MeterSettings, get_meter_settings

R = TypeVar("R")


class Meter(MeterAPI):
    def __init__(
        self,
        client: redis.Redis,
        *,
        keys: Keys | None = None,
        loader: Loader | None = None,
        clock_ms: Callable[[], int] | None = None,
        check_clock: bool | None = None,
    ) -> None:
        super().__init__(keys or Keys(), loader, clock_ms, check_clock)
        self.redis = client

    @classmethod
    def from_settings(cls, settings: MeterSettings | None = None, **kwargs: Any) -> Meter:
        """Connects as CREDITMETER_* says (starting the embedded Redis when no URL is set)
        and refuses a Redis that may evict balances."""
        settings = settings or get_meter_settings()
        kwargs.setdefault("keys", keys_from(settings))
        return cls.from_url(checked_redis_url(settings), **kwargs)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Meter:
        return cls(sync_client(url), **kwargs)

    def _drive(self, op: ops.Op[R]) -> R:
        try:
            request = next(op)
            while True:
                request = op.send(self._perform(request))
        except StopIteration as stop:
            result: R = stop.value  # the generator's return value: the operation's result
            return result

    def _perform(self, request: ops.Request) -> Any:
        if isinstance(request, ops.Eval):
            return self._eval(request)
        if isinstance(request, ops.Command):
            return self.redis.execute_command(*request.args)  # type: ignore[no-untyped-call]
        if isinstance(request, ops.LoadWallet):
            if self.loader is None:
                raise WalletNotLoaded(request.account_id, request.credit_type)
            return self.loader.load_wallet(
                request.account_id, request.credit_type, create=request.create
            )
        if isinstance(request, ops.LoadCatalog):
            if self.loader is None:
                raise CatalogNotLoaded("catalog replica missing and no loader to restore it")
            return self.loader.load_catalog()
        if isinstance(request, ops.LoadHoldOwner):
            return None if self.loader is None else self.loader.load_hold_owner(request.hold_id)
        if isinstance(request, ops.LoadCharge):
            return None if self.loader is None else self.loader.load_charge(request.charge_id)
        if isinstance(request, ops.LoadStoredResult):
            if self.loader is None:
                return None
            return self.loader.load_stored_result(request.account_id, request.idempotency_key)
        assert isinstance(request, ops.LoadAccountTypes), request
        return [] if self.loader is None else self.loader.account_credit_types(request.account_id)

    def _eval(self, ev: ops.Eval) -> Any:
        return runner.only_reply(ev.script, runner.run(self.redis, ev.script, ev.keys, ev.args))

    def hold(
        self,
        account_id: str,
        tool: str,
        *,
        quantity: int = 1,
        amount: int | None = None,
        ttl_s: int = bounds.HOLD_TTL_S_DEFAULT,
        idempotency_key: str | None = None,
    ) -> Hold:
        """Reserves credits: `with m.hold(...) as h: ... h.settle(cost)`."""
        op = ops.hold(
            self._env,
            account_id,
            tool,
            quantity=quantity,
            amount=amount,
            ttl_s=ttl_s,
            idempotency_key=idempotency_key,
        )
        return Hold(self, self._drive(op))
