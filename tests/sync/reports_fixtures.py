"""A small book of known rows for the report tests, and a database of their own to hold it.

Reports add up every row of a table, so they cannot share the suite's SQL (other modules
write to it, and CI's PostgreSQL keeps rows across runs): `private_database` migrates a new
SQLite file, or creates a database of its own on the PostgreSQL of TEST_DATABASE_URL.

Times are hours into November 2026 (UTC). The expected figures in test_reports.py are
worked out by hand from these rows, in comments there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine

from sync.db import engine_for
from sync.models import T_ACCOUNTS, T_GRANTS, T_HOLDS, T_LEDGER, T_PURCHASES, T_WALLETS
from tests.sql_databases import fresh_database

DAY = 86_400_000
HOUR = 3_600_000
NOV1 = 1_793_491_200_000  # 2026-11-01T00:00:00Z


def at(day: int, hour: int = 0) -> int:
    """ms of `hour` o'clock UTC on November (1 + day), 2026."""
    return NOV1 + day * DAY + hour * HOUR


NOW = at(4, 12)  # 2026-11-05T12:00:00Z: liability and open holds are read at this time

# (id, account, credit type, kind, signed amount, tool, created_at_ms)
LEDGER = [
    ("e01", "alice", "credits", "grant", 1000, None, at(-1, 23)),
    ("e02", "bob", "credits", "grant", 500, None, at(-1, 23)),
    ("e03", "alice", "credits", "charge", -10, "image", at(0)),  # exactly 2026-11-01T00:00Z
    ("e04", "alice", "credits", "charge", -10, "image", at(0, 12)),
    ("e05", "bob", "credits", "charge", -30, "chat", at(1) - 1),  # the last ms of Nov 1
    ("e06", "alice", "credits", "refund", 10, "image", at(1)),  # the first ms of Nov 2
    ("e07", "carol", "tokens", "grant", 200, None, at(1, 5)),
    ("e08", "carol", "tokens", "charge", -50, "chat", at(1, 6)),
    ("e09", "bob", "credits", "adjustment", 5, None, at(1, 7)),
    # Nov 3: nothing at all.
    ("e10", "alice", "credits", "expire", -100, None, at(3, 1)),
    ("e11", "bob", "credits", "charge", -20, "image", at(3, 2)),
    ("e12", "carol", "tokens", "clawback", -25, None, at(3, 3)),
    ("e13", "alice", "credits", "charge", -7, "chat", at(4)),  # exactly 2026-11-05T00:00Z
]

# (account, credit type, balance, debt, held). A balance is the sum of its ledger amounts, as
# the flush keeps it: alice 1000-10-10+10-100-7, bob 500-30+5-20, carol 200-50-25.
WALLETS = [
    ("alice", "credits", 883, 0, 15),
    ("bob", "credits", 455, 40, 0),
    ("carol", "tokens", 125, 0, 5),
    ("dave", "minutes", 0, 12, 0),  # a wallet with debt and no entry
]

# (id, account, credit type, remaining, category, expires_at_ms or None)
GRANTS = [
    ("g1", "alice", "credits", 600, "paid", None),
    ("g2", "bob", "credits", 300, "promotional", NOW + 3 * DAY),
    ("g3", "bob", "credits", 100, "paid", NOW + 10 * DAY),
    ("g4", "alice", "credits", 0, "paid", None),  # spent
    ("g5", "carol", "tokens", 125, "promotional", NOW + 7 * DAY),  # the last ms of 7 days
    ("g6", "carol", "tokens", 50, "paid", NOW),  # expires at now: expired
    ("g7", "alice", "credits", 80, "promotional", NOW - DAY),  # expired
    ("g8", "carol", "tokens", 40, "paid", NOW + 31 * DAY),
    ("g9", "dave", "gems", 9, "paid", None),  # a credit type no wallet has
]

# (id, account, credits, pack, plan, amount_minor, currency, status, source, refunded_minor,
#  created_at_ms)
PURCHASES = [
    ("p1", "alice", 100, "small", None, 500, "usd", "paid", "pack", 0, at(0, 1)),
    ("p2", "bob", 200, "large", None, 900, "usd", "refunded", "pack", 300, at(0, 2)),
    ("p3", "carol", 50, None, None, 250, "eur", "paid", "custom", 0, at(0, 3)),
    ("p4", "alice", 100, "small", None, 500, "usd", "pending", "pack", 0, at(1, 1)),
    ("p5", "alice", 30, None, "pro", 0, "usd", "paid", "rollover", 0, at(1, 2)),
    ("p6", "bob", 1000, None, "pro", 2000, "usd", "paid", "plan", 0, at(1, 3)),
    ("p7", "carol", 100, "small", None, 450, "eur", "disputed", "pack", 450, at(1, 4)),
    ("p8", "alice", 100, "small", None, 500, "usd", "paid", "pack", 0, at(4)),  # exactly at to
    ("p9", "dave", 100, "small", None, 500, "usd", "paid", "pack", 0, at(0)),  # exactly at from
]

# (id, account, credit type, tool, amount, status, expires_at_ms)
HOLDS = [
    ("h1", "alice", "credits", "image", 15, "active", NOW + 60_000),
    ("h2", "carol", "tokens", "chat", 5, "active", NOW + 10_000),
    ("h3", "bob", "credits", "chat", 7, "active", NOW),  # expires at now: expired
    ("h4", "bob", "credits", "image", 9, "settled", NOW + 100_000),
    ("h5", "alice", "credits", "chat", 3, "expired", NOW - 60_000),
    ("h6", "dave", "credits", "chat", 4, "active", NOW + 10_000),  # same expiry as h2
]


def load(engine: Engine) -> None:
    accounts = sorted({row[1] for row in LEDGER} | {row[0] for row in WALLETS})
    with engine.begin() as conn:
        conn.execute(
            T_ACCOUNTS.insert(),
            [
                {"id": a, "overdraft_limit": 0, "flagged": False, "created_at_ms": 0}
                for a in accounts
            ],
        )
        conn.execute(
            T_WALLETS.insert(),
            [
                {"account_id": a, "credit_type": ct, "balance": b, "debt": d, "held": h}
                | {"updated_at_ms": NOW}
                for a, ct, b, d, h in WALLETS
            ],
        )
        conn.execute(
            T_LEDGER.insert(),
            [
                {"id": i, "bucket": 0, "stream_id": i, "account_id": a, "credit_type": ct}
                | {"kind": k, "amount": amount, "balance_after": 0, "tool": tool}
                | {"quantity": 1 if tool else None, "created_at_ms": ms}
                for i, a, ct, k, amount, tool, ms in LEDGER
            ],
        )
        conn.execute(
            T_GRANTS.insert(),
            [
                {"id": i, "account_id": a, "credit_type": ct, "amount": 1000, "remaining": r}
                | {"category": cat, "priority": 50, "expires_at_ms": exp, "source": "test"}
                | {"created_at_ms": NOV1}
                for i, a, ct, r, cat, exp in GRANTS
            ],
        )
        conn.execute(
            T_PURCHASES.insert(),
            [
                {"id": i, "account_id": a, "credit_type": "credits", "credits": credits}
                | {"pack_id": pack, "plan_id": plan, "amount_minor": minor, "currency": cur}
                | {"status": status, "source": source, "refunded_minor": refunded}
                | {"clawed_back": 0, "created_at_ms": ms}
                for i, a, credits, pack, plan, minor, cur, status, source, refunded, ms in PURCHASES
            ],
        )
        conn.execute(
            T_HOLDS.insert(),
            [
                {"id": i, "account_id": a, "credit_type": ct, "tool": tool, "amount": amount}
                | {"status": status, "expires_at_ms": exp, "created_at_ms": NOV1}
                | {"updated_at_ms": NOV1}
                for i, a, ct, tool, amount, status, exp in HOLDS
            ],
        )


@contextmanager
def private_database(shared_url: str | None, tmp_dir: Path) -> Iterator[Engine]:
    """A migrated database nobody else writes to: a new SQLite file, or (when the suite runs
    on PostgreSQL) a new database on the same server, dropped afterwards."""
    with fresh_database(shared_url or "", tmp_dir, "reports") as url:
        engine = engine_for(url)
        try:
            yield engine
        finally:
            engine.dispose()
