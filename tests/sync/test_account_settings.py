"""sync.accounts on real SQL and Redis: an account's own rate limits merge per tool, and
put_in_force, the "write Redis, re-read SQL" loop the API and the CLI share, leaves Redis
with what SQL holds when a concurrent change commits between its write and its re-read."""

from __future__ import annotations

import pytest
import redis
from sqlalchemy import Engine

from meter import InvalidArgument, Meter, Tool
from meter.bounds import RATE_LIMIT_OVERRIDES_MAX
from meter.keys import Keys
from sync.accounts import (
    AccountSettings,
    get_settings,
    put_in_force,
    update_settings,
)
from sync.in_force import ROUNDS_MAX
from tests.sync.conftest import account


def _account(meter: Meter, tool: Tool) -> str:
    acct = account()
    meter.grant(acct, tool.credit_type, 10)  # the first touch makes the SQL row
    return acct


def test_rate_limits_merge_per_tool_and_null_removes_one(
    engine: Engine, meter: Meter, tool: Tool
) -> None:
    acct = _account(meter, tool)
    update_settings(engine, "t", acct, {"rate_limits": {"A": "1/second", "B": "2/minute"}})
    saved = update_settings(engine, "t", acct, {"rate_limits": {"A": None, "*": "0/hour"}})
    assert saved is not None and saved.rate_limits == {"B": "2/minute", "*": "0/hour"}
    full = {f"T{i}": "1/second" for i in range(RATE_LIMIT_OVERRIDES_MAX - 2)}
    with pytest.raises(InvalidArgument):  # 2 kept + 30 new: one too many once merged
        update_settings(engine, "t", acct, {"rate_limits": {**full, "ONE_MORE": "1/hour"}})
    assert get_settings(engine, acct) == saved  # nothing was written


def test_put_in_force_writes_again_what_a_concurrent_change_committed(
    engine: Engine, meter: Meter, tool: Tool, client: redis.Redis, keys: Keys
) -> None:
    acct = _account(meter, tool)
    written: list[dict[str, str]] = []

    def write(s: AccountSettings) -> None:
        written.append(s.rate_limits)
        meter.set_account(s.id, **s.in_redis)
        if len(written) == 1:  # another PATCH commits between this write and the re-read
            update_settings(engine, "other", acct, {"rate_limits": {tool.name: "1/second"}})

    saved = update_settings(engine, "me", acct, {"rate_limits": {tool.name: "0/second"}})
    assert saved is not None
    final = put_in_force(engine, saved, write)
    assert written == [{tool.name: "0/second"}, {tool.name: "1/second"}]
    assert final.rate_limits == {tool.name: "1/second"}
    assert client.hget(keys.wallet(acct, tool.credit_type), "r") == f"{tool.name}:1:1000".encode()


def test_put_in_force_stops_after_its_rounds_under_endless_changes(
    engine: Engine, meter: Meter, tool: Tool
) -> None:
    acct = _account(meter, tool)
    rounds: list[int] = []

    def write(s: AccountSettings) -> None:
        rounds.append(s.overdraft_limit)
        update_settings(engine, "other", acct, {"overdraft_limit": s.overdraft_limit + 1})

    saved = update_settings(engine, "me", acct, {"overdraft_limit": 0})
    assert saved is not None
    assert put_in_force(engine, saved, write).overdraft_limit == ROUNDS_MAX
    assert rounds == list(range(ROUNDS_MAX))
