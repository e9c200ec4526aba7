"""A small report dataset that other rows in a shared SQL cannot touch: its own credit type,
tool, pack and accounts, and a two-day window on a random day of 2001-2020 (the shared test
SQL keeps rows across runs). The expected numbers below are worked out by hand."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from meter.times import now_ms
from sync.models import T_ACCOUNTS, T_GRANTS, T_LEDGER, T_PURCHASES, T_WALLETS

DAY_MS = 86_400_000
HOUR_MS = 3_600_000


@dataclass(frozen=True)
class ReportData:
    credit_type: str
    tool: str
    pack: str
    a1: str
    a2: str
    a3: str
    day0_ms: int

    @property
    def day0(self) -> str:
        return datetime.fromtimestamp(self.day0_ms / 1000, UTC).date().isoformat()

    @property
    def day1(self) -> str:
        return datetime.fromtimestamp((self.day0_ms + DAY_MS) / 1000, UTC).date().isoformat()

    @property
    def day2(self) -> str:
        return datetime.fromtimestamp((self.day0_ms + 2 * DAY_MS) / 1000, UTC).date().isoformat()


def insert_report_data(engine: Engine) -> ReportData:
    tag = uuid.uuid4().hex[:8]
    start = datetime(2001, 1, 1, tzinfo=UTC).timestamp() * 1000
    day0_ms = int(start) + random.randrange(0, 20 * 365) * DAY_MS
    d = ReportData(
        f"rt{tag}",
        f"RT_{tag.upper()}",
        f"rtpack-{tag}",
        f"ra1-{tag}",
        f"ra2-{tag}",
        f"ra3-{tag}",
        day0_ms,
    )
    now = now_ms()

    def entry(
        account: str, kind: str, amount: int, at_ms: int, tool: str | None = None
    ) -> dict[str, Any]:
        return {
            "id": uuid.uuid4().hex,
            "bucket": 0,
            "stream_id": f"{at_ms:015d}-0000000000",
            "account_id": account,
            "credit_type": d.credit_type,
            "kind": kind,
            "amount": amount,
            "balance_after": 0,
            "tool": tool,
            "created_at_ms": at_ms,
        }

    def purchase(
        status: str, source: str, amount: int, currency: str, at_ms: int, refunded: int = 0
    ) -> dict[str, Any]:
        return {
            "id": uuid.uuid4().hex,
            "account_id": d.a1,
            "credit_type": d.credit_type,
            "credits": 100,
            "pack_id": d.pack,
            "amount_minor": amount,
            "currency": currency,
            "status": status,
            "source": source,
            "refunded_minor": refunded,
            "created_at_ms": at_ms,
        }

    def grant(remaining: int, category: str, expires_at_ms: int | None) -> dict[str, Any]:
        return {
            "id": uuid.uuid4().hex,
            "account_id": d.a1,
            "credit_type": d.credit_type,
            "amount": remaining + 1,
            "remaining": remaining,
            "category": category,
            "priority": 10,
            "expires_at_ms": expires_at_ms,
            "source": "admin",
            "created_at_ms": now,
        }

    def wallet(account: str, balance: int, debt: int, held: int) -> dict[str, Any]:
        return {
            "account_id": account,
            "credit_type": d.credit_type,
            "balance": balance,
            "debt": debt,
            "held": held,
            "updated_at_ms": now,
        }

    t0, t1 = day0_ms, day0_ms + DAY_MS
    with engine.begin() as conn:
        conn.execute(
            T_ACCOUNTS.insert(),
            [
                {"id": a, "overdraft_limit": 0, "flagged": False, "created_at_ms": now}
                for a in (d.a1, d.a2, d.a3)
            ],
        )
        conn.execute(
            T_LEDGER.insert(),
            [
                # before the window: the opening balance
                entry(d.a2, "grant", 500, t0 - DAY_MS),
                entry(d.a3, "adjustment", -5, t0 - DAY_MS),
                entry(d.a2, "charge", -7, t0, d.tool),  # exactly at `from`: in
                entry(d.a1, "grant", 1000, t0 + 1 * HOUR_MS),
                entry(d.a1, "charge", -30, t0 + 2 * HOUR_MS, d.tool),
                entry(d.a2, "charge", -20, t0 + 3 * HOUR_MS, d.tool),
                entry(d.a1, "refund", 10, t0 + 4 * HOUR_MS, d.tool),
                entry(d.a1, "charge", -50, t1 + 1 * HOUR_MS, d.tool),
                entry(d.a1, "expire", -100, t1 + 5 * HOUR_MS),
                entry(d.a2, "charge", -9, t1 + DAY_MS, d.tool),  # exactly at `to`: out
            ],
        )
        conn.execute(
            T_PURCHASES.insert(),
            [
                purchase("paid", "pack", 500, "usd", t0 + HOUR_MS, refunded=100),
                purchase("pending", "pack", 900, "usd", t0 + HOUR_MS),  # not paid: out
                purchase("paid", "rollover", 0, "usd", t0 + HOUR_MS),  # not a sale: out
                purchase("refunded", "pack", 700, "eur", t1 + HOUR_MS, refunded=700),
            ],
        )
        conn.execute(
            T_GRANTS.insert(),
            [
                grant(100, "paid", None),
                grant(50, "promotional", now + 3 * DAY_MS),
                grant(20, "promotional", now + 20 * DAY_MS),
                grant(99, "promotional", now - HOUR_MS),  # expired: owed no more
                grant(0, "paid", None),  # spent
            ],
        )
        # The synced snapshots agree with the ledger (the flush moves both in one transaction).
        conn.execute(
            T_WALLETS.insert(),
            [
                wallet(d.a1, 830, debt=0, held=8),  # 1000 - 30 + 10 - 50 - 100
                wallet(d.a2, 464, debt=0, held=0),  # 500 - 7 - 20 - 9
                wallet(d.a3, -5, debt=5, held=0),
            ],
        )
    return d


# Hand-computed answers for the window [day0, day2).
USAGE_BY_DAY = {  # day index -> (charges, refunds, credits)
    0: (3, 1, 47),  # 7 + 30 + 20 - 10
    1: (1, 0, 50),
}
USAGE_BY_ACCOUNT = {"a1": (2, 1, 70), "a2": (2, 0, 27)}  # a1: 30 + 50 - 10; a2: 7 + 20
SERIES = {0: 1448, 1: 1298}  # 500 - 5 + 1000 - 7 - 30 - 20 + 10; then - 50 - 100
REVENUE_BY_CURRENCY = {  # currency -> (purchases, gross, refunded, net)
    "usd": (1, 500, 100, 400),
    "eur": (1, 700, 700, 0),
}
LIABILITY = {
    "paid": 100,
    "promotional": 70,
    "outstanding": 170,
    "expiring_7d": 50,
    "expiring_30d": 70,
    "debt": 5,
    "held": 8,
}
