"""`creditmeter reconcile [--repair]`: does every wallet and grant in Redis match SQL?

Order: journal the expiry of everything due (so both sides expire the same grants), drain
the journal into SQL, then compare each Redis wallet with its SQL snapshot: balance, debt,
held and every grant's remainder. It also reports a lost Redis dataset (epoch) and the
entries SQL has that Redis lost (gaps the flush detected). `--repair` rewrites a differing
Redis wallet from SQL, the book of record, only if the wallet did not change meanwhile.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import redis
from sqlalchemy import Engine, func, or_, select

from meter import Meter, ops, scripts
from meter.keys import Keys
from meter.ops import as_text, now_ms
from sync import limits
from sync.epoch import EpochCheck, check_epoch, read_state
from sync.flush import Flusher
from sync.loader import SqlLoader, wallet_snapshot
from sync.models import T_GAP_ENTRIES, T_GAPS, T_GRANTS, T_LEDGER, T_WALLETS


@dataclass(frozen=True)
class Difference:
    account_id: str
    credit_type: str
    what: str  # balance | debt | held | grant <id>
    redis: int | None
    sql: int | None


@dataclass(frozen=True)
class LostEntry:
    id: str
    account_id: str
    credit_type: str
    kind: str
    amount: int
    created_at_ms: int


@dataclass(frozen=True)
class Gap:
    journal: str
    after_stream_id: str
    through_stream_id: str
    lost_entries: int  # -1: the whole journal was lost
    detected_at_ms: int
    entries: tuple[LostEntry, ...]


@dataclass
class ReconcileReport:
    epoch: EpochCheck
    redis_lost: dict[str, Any] | None
    gaps: list[Gap]
    wallets_compared: int = 0
    wallets_not_in_redis: int = 0
    drained_entries: int = 0
    differences: list[Difference] = field(default_factory=list)
    repaired: list[tuple[str, str]] = field(default_factory=list)
    repair_skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences or len(self.repaired) == len(
            {(d.account_id, d.credit_type) for d in self.differences}
        )


@dataclass(frozen=True)
class WalletState:
    """A wallet as compared: read from Redis (parse_wallet) or from SQL (_sql_wallet)."""

    balance: int
    debt: int
    held: int
    grants: dict[str, int]


def parse_wallet(raw: dict[Any, Any], now_ms: int) -> WalletState:
    """A wallet hash as the scripts read it: unexpired grants minus debt; live holds."""
    debt, held, grants = 0, 0, {}
    for k, v in raw.items():
        name, value = as_text(k), as_text(v)
        if name == "d":
            debt = int(value)
        elif name.startswith("g:"):
            rem, _prio, exp, _cat = value.split("|")
            if int(exp) == 0 or int(exp) > now_ms:
                grants[name[2:]] = int(rem)
        elif name.startswith("h:"):
            amount, exp = value.split("|")
            if int(exp) > now_ms:
                held += int(amount)
    return WalletState(sum(grants.values()) - debt, debt, held, grants)


def redis_wallets(client: redis.Redis, keys: Keys) -> list[tuple[str, str]]:
    """(account_id, credit_type) of every wallet hash in Redis, sorted."""
    out = []
    for bucket in keys.all_buckets():
        for key in client.scan_iter(match=keys.wallet_pattern(bucket), count=1000):
            out.append(keys.wallet_of(as_text(key)))
    return sorted(out)


def _drain(flusher: Flusher) -> int:
    """Flushes until every bucket was flushed empty by this call; waits out another
    flusher's lock (a dead one's lasts its TTL)."""
    total = 0
    deadline = time.monotonic() + limits.FLUSH_LOCK_TTL_MS / 1000 + limits.RECONCILE_DRAIN_SLACK_S
    pending = set(flusher.keys.all_buckets())
    while time.monotonic() < deadline:
        for bucket in sorted(pending):
            result = flusher.flush_bucket(bucket)
            if result is not None:
                total += result.entries
                pending.discard(bucket)
        if not pending:
            return total
        time.sleep(0.05)
    raise RuntimeError(f"buckets {sorted(pending)} did not drain: a flusher holds them")


def _gaps(engine: Engine, keys: Keys) -> list[Gap]:
    with engine.connect() as conn:
        gaps = (
            conn.execute(
                select(T_GAPS)
                .where(T_GAPS.c.journal.like(f"{keys.prefix}:%"))
                .order_by(T_GAPS.c.id)
            )
            .mappings()
            .all()
        )
        out = []
        for g in gaps:
            rows = conn.execute(
                select(T_LEDGER)
                .join(T_GAP_ENTRIES, T_GAP_ENTRIES.c.entry_id == T_LEDGER.c.id)
                .where(T_GAP_ENTRIES.c.gap_id == g["id"])
                .order_by(T_LEDGER.c.stream_id)
            ).mappings()
            entries = tuple(
                LostEntry(
                    r["id"],
                    r["account_id"],
                    r["credit_type"],
                    r["kind"],
                    r["amount"],
                    r["created_at_ms"],
                )
                for r in rows
            )
            out.append(
                Gap(
                    g["journal"],
                    g["after_stream_id"],
                    g["through_stream_id"],
                    g["lost_entries"],
                    g["detected_at_ms"],
                    entries,
                )
            )
    return out


def _sql_wallet(
    engine: Engine, account_id: str, credit_type: str, now_ms: int
) -> WalletState | None:
    with engine.connect() as conn:
        row = (
            conn.execute(
                select(T_WALLETS).where(
                    T_WALLETS.c.account_id == account_id, T_WALLETS.c.credit_type == credit_type
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            return None
        grants = conn.execute(
            select(T_GRANTS.c.id, T_GRANTS.c.remaining).where(
                T_GRANTS.c.account_id == account_id,
                T_GRANTS.c.credit_type == credit_type,
                T_GRANTS.c.remaining != 0,
                or_(T_GRANTS.c.expires_at_ms.is_(None), T_GRANTS.c.expires_at_ms > now_ms),
            )
        ).all()
    return WalletState(row["balance"], row["debt"], row["held"], {g: r for g, r in grants})


def compare(
    account_id: str, credit_type: str, r: WalletState, s: WalletState | None
) -> list[Difference]:
    if s is None:
        return [Difference(account_id, credit_type, "missing in SQL", r.balance, None)]
    out = [
        Difference(account_id, credit_type, name, a, b)
        for name, a, b in (
            ("balance", r.balance, s.balance),
            ("debt", r.debt, s.debt),
            ("held", r.held, s.held),
        )
        if a != b
    ]
    for gid in sorted(set(r.grants) | set(s.grants)):
        a, b = r.grants.get(gid), s.grants.get(gid)
        if a != b:
            out.append(Difference(account_id, credit_type, f"grant {gid}", a, b))
    return out


def reconcile(
    client: redis.Redis, engine: Engine, keys: Keys, *, repair: bool = False
) -> ReconcileReport:
    epoch = check_epoch(client, engine, keys)
    meter = Meter(client, keys=keys, loader=SqlLoader(engine, keys))
    wallets = redis_wallets(client, keys)
    for account_id, credit_type in wallets:
        meter.expire_wallet(account_id, credit_type)
    drained = _drain(Flusher(client, engine, keys))
    lost = read_state(engine, keys, "redis_lost")
    report = ReconcileReport(
        epoch=epoch,
        redis_lost=json.loads(lost) if lost else None,
        gaps=_gaps(engine, keys),
        drained_entries=drained,
    )
    now = now_ms()
    in_both = 0
    for account_id, credit_type in wallets:
        key = keys.wallet(account_id, credit_type)
        raw = client.hgetall(key)
        if not raw:
            continue
        in_sql = _sql_wallet(engine, account_id, credit_type, now)
        in_both += in_sql is not None
        diffs = compare(account_id, credit_type, parse_wallet(raw, now), in_sql)
        report.wallets_compared += 1
        report.differences += diffs
        if diffs and repair:
            target = (
                report.repaired
                if _repair(client, engine, keys, account_id, credit_type, raw)
                else report.repair_skipped
            )
            target.append((account_id, credit_type))
    with engine.connect() as conn:
        sql_wallets = conn.execute(select(func.count()).select_from(T_WALLETS)).scalar_one()
    # Not a difference: such a wallet is loaded from SQL on its next touch.
    report.wallets_not_in_redis = sql_wallets - in_both
    return report


def _repair(
    client: redis.Redis,
    engine: Engine,
    keys: Keys,
    account_id: str,
    credit_type: str,
    seen: dict[Any, Any],
) -> bool:
    """Replaces the Redis wallet with SQL's, unless it changed since it was compared."""
    key = keys.wallet(account_id, credit_type)
    with engine.connect() as conn:
        snap = wallet_snapshot(conn, account_id, credit_type)
    ev = ops.hydrate_eval(keys, account_id, credit_type, snap)
    script = scripts.get("hydrate")
    with client.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(key)
            if pipe.hgetall(key) != seen:
                return False
            pipe.multi()
            pipe.delete(key)
            pipe.eval(script.source, len(ev.keys), *ev.keys, *ev.args)  # no NOSCRIPT in MULTI
            pipe.execute()
        except redis.WatchError:
            return False
    return True
