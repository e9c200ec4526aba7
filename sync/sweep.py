"""The expiry sweep: wallets whose grants or holds are due get their expire entries now,
even when nobody touches them (the scripts enforce expiry on every touch anyway).

The worker's clock picks the due wallets, but Redis's decides: the expire script refuses a
now_ms further than bounds.CLOCK_SKEW_MS_MAX from Redis TIME (meter.ClockSkew), so a
worker whose clock runs fast fails its sweep loudly and expires nothing early."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from meter import Meter
from meter.keys import Keys, parse_due_member
from sync import limits


@dataclass
class SweepResult:
    wallets: int = 0
    grants_expired: int = 0
    holds_expired: int = 0


def sweep_expiry(client: redis.Redis, meter: Meter, keys: Keys, now_ms: int) -> SweepResult:
    out = SweepResult()
    for bucket in keys.all_buckets():
        due = client.zrangebyscore(
            keys.due(bucket), "-inf", now_ms, start=0, num=limits.SWEEP_WALLETS_MAX
        )
        for raw in due:
            member = raw.decode() if isinstance(raw, bytes) else str(raw)
            account_id, credit_type = parse_due_member(member)
            r = meter.expire_wallet(account_id, credit_type)
            out.wallets += 1
            out.grants_expired += r.grants_expired
            out.holds_expired += r.holds_expired
    return out
