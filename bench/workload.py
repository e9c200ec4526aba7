"""What every Redis measurement starts from: a clean keyspace, the tool, funded wallets."""

from __future__ import annotations

import redis

from meter import Meter, NewAccountLoader, Tool, scripts
from meter.keys import Keys

PREFIX = "bench"
TOOL = "BENCH"
COST = 1
CREDIT_TYPE = "credits"
FUNDS = 2**53 - 1  # CREDITS_MAX: no run can drain it


def reset(url: str, prefix: str = PREFIX) -> None:
    """Deletes the prefix's keys (FLUSHALL on the bench's private server is the same, faster)."""
    client = redis.Redis.from_url(url)
    try:
        pipe = client.pipeline(transaction=False)
        for key in client.scan_iter(match=f"{prefix}:*", count=10_000):
            pipe.unlink(key)
        pipe.execute()
    finally:
        client.close()


def prepare(url: str, accounts: list[str], prefix: str = PREFIX) -> Meter:
    """A sync Meter on a clean prefix, the tool in every bucket, each account funded."""
    reset(url, prefix)
    tool = Tool(name=TOOL, cost=COST, credit_type=CREDIT_TYPE)
    meter = Meter.from_url(url, keys=Keys(prefix=prefix), loader=NewAccountLoader([tool]))
    meter.redis.script_load(scripts.get("charge").source)
    meter.set_tools([tool])
    for account in accounts:
        meter.grant(account, CREDIT_TYPE, FUNDS, category="paid")
    return meter


def spent(meter: Meter, accounts: list[str]) -> int:
    """Credits taken from the accounts since prepare()."""
    return sum(FUNDS - meter.balance(a, [CREDIT_TYPE]).wallets[0].balance for a in accounts)


def account_names(count: int, tag: str = "acct") -> list[str]:
    return [f"{tag}-{i:05d}" for i in range(count)]
