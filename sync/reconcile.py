"""`creditmeter reconcile [--repair]`: does every wallet and grant in Redis match SQL?

Order: journal the expiry of everything due (so both sides expire the same grants), drain
the journal into SQL, then compare each Redis wallet with its SQL snapshot: balance, debt,
held and every grant's remainder. It also reports a lost Redis dataset (epoch) and the
entries SQL has that Redis lost (gaps the flush detected). `--repair` rewrites a differing
Redis wallet from SQL, the book of record.

Safe while charging goes on: a wallet is read from Redis together with its bucket's last
journal id (one MULTI), and when it differs from SQL the bucket is flushed up to that id
before SQL is read again, so SQL is compared at the very point the Redis copy shows, never
stale, and the comparison counts only if the wallet did not change while SQL caught up
(a wallet that keeps changing is reported busy, not compared). Only a difference that
survives that is reported; a repair then writes Redis inside WATCH/MULTI and only if the
wallet hash is still exactly what was compared (a wallet changed since is left alone and
reported "changed, skipped"). A wallet whose difference its dead
letters explain is named so and never repaired: rewriting it from SQL would hand back money
the dead letters hold (`creditmeter deadletters retry` writes them).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import redis
from sqlalchemy import Engine, func, or_, select

from meter import Meter, ops, scripts, wire
from meter.keys import Keys
from meter.ops import as_text
from meter.times import now_ms
from sync import limits
from sync.deadletters import dead_letter_sums
from sync.epoch import EpochCheck, check_epoch, read_state
from sync.flush import Flusher
from sync.journal import sortable
from sync.loader import SqlLoader, wallet_snapshot
from sync.models import T_GAP_ENTRIES, T_GAPS, T_GRANTS, T_LEDGER, T_WALLETS
from sync.writer import read_cursor


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
    repair_skipped: list[tuple[str, str]] = field(default_factory=list)  # changed meanwhile
    busy: list[tuple[str, str]] = field(default_factory=list)  # kept changing: not compared
    # Wallets whose Redis - SQL balance is exactly what their dead letters add up to.
    explained_by_dead_letters: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.differences or len(self.repaired) == len(
            {(d.account_id, d.credit_type) for d in self.differences}
        )

    def cause(self, account_id: str, credit_type: str) -> str | None:
        """What explains a wallet's difference, when reconcile knows it."""
        amount = self.explained_by_dead_letters.get((account_id, credit_type))
        if amount is None:
            return None
        return f"dead letters totalling {amount} not in SQL (creditmeter deadletters list)"


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
        if name == wire.WalletField.DEBT:
            debt = int(value)
        elif name.startswith(wire.GRANT_PREFIX):
            g = wire.parse_grant_value(value)
            if g.expires_at_ms == 0 or g.expires_at_ms > now_ms:
                grants[name.removeprefix(wire.GRANT_PREFIX)] = g.remaining
        elif name.startswith(wire.HOLD_PREFIX):
            h = wire.parse_hold_value(value)
            if h.expires_at_ms > now_ms:
                held += h.amount
    return WalletState(sum(grants.values()) - debt, debt, held, grants)


def redis_wallets(client: redis.Redis, keys: Keys) -> list[tuple[str, str]]:
    """(account_id, credit_type) of every wallet hash in Redis, sorted."""
    out = []
    for bucket in keys.all_buckets():
        for key in client.scan_iter(match=keys.wallet_pattern(bucket), count=1000):
            out.append(keys.wallet_of(as_text(key)))
    return sorted(out)


def _drain(flusher: Flusher) -> int:
    """Brings SQL up to every bucket's journal as it is now (entries appended meanwhile are
    left to the worker): the entries this call flushed itself. Each bucket is flushed once
    by this flusher when it is free, which also records what Redis lost (the gap check);
    a bucket another flusher holds is waited for up to the journal's last id."""
    total = 0
    for bucket in flusher.keys.all_buckets():
        result = flusher.flush_bucket(bucket, limits.RECONCILE_FLUSH_BUDGET_S)
        total += 0 if result is None else result.entries
        last = flusher.redis.xrevrange(flusher.keys.journal(bucket), count=1)
        if last:
            total += flush_through(flusher, bucket, as_text(last[0][0]))
    return total


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


def read_at_position(
    client: redis.Redis, keys: Keys, account_id: str, credit_type: str
) -> tuple[dict[Any, Any], str | None]:
    """The wallet hash and its bucket's last journal id, read in one MULTI: every change the
    hash shows is journaled at or before that id (a script writes both at once)."""
    with client.pipeline(transaction=True) as pipe:
        pipe.hgetall(keys.wallet(account_id, credit_type))
        pipe.xrevrange(keys.journal(keys.bucket(account_id)), count=1)
        raw, last = pipe.execute()
    return raw, as_text(last[0][0]) if last else None


def flush_through(flusher: Flusher, bucket: int, stream_id: str) -> int:
    """Returns once SQL committed the bucket's journal up to `stream_id` (this flusher or
    another, whichever holds the bucket): the entries this flusher wrote. Raises if that
    takes longer than a dead flusher's lock lasts, plus slack."""
    journal = flusher.keys.journal(bucket)
    target = sortable(stream_id)
    deadline = time.monotonic() + limits.FLUSH_LOCK_TTL_MS / 1000 + limits.RECONCILE_DRAIN_SLACK_S
    flushed = 0
    while True:
        with flusher.engine.connect() as conn:
            cursor = read_cursor(conn, journal)
        if cursor is not None and cursor >= target:
            return flushed
        if time.monotonic() >= deadline:
            raise RuntimeError(f"bucket {bucket} was not flushed up to {stream_id} in time")
        result = flusher.flush_bucket(bucket, limits.RECONCILE_FLUSH_BUDGET_S)
        if result is None:
            time.sleep(limits.RECONCILE_LOCK_WAIT_S)  # another flusher works it: let it
        else:
            flushed += result.entries


def reconcile(
    client: redis.Redis, engine: Engine, keys: Keys, *, repair: bool = False
) -> ReconcileReport:
    epoch = check_epoch(client, engine, keys)
    meter = Meter(client, keys=keys, loader=SqlLoader(engine, keys))
    wallets = redis_wallets(client, keys)
    for account_id, credit_type in wallets:
        meter.expire_wallet(account_id, credit_type)
    flusher = Flusher(client, engine, keys)
    drained = _drain(flusher)
    lost = read_state(engine, keys, "redis_lost")
    report = ReconcileReport(
        epoch=epoch,
        redis_lost=json.loads(lost) if lost else None,
        gaps=_gaps(engine, keys),
        drained_entries=drained,
    )
    dead = dead_letter_sums(engine, keys)
    in_both = 0
    try:
        for account_id, credit_type in wallets:
            at_rest = _compare_at_rest(client, flusher, account_id, credit_type)
            wallet = (account_id, credit_type)
            if at_rest is None:
                report.busy.append(wallet)
                continue
            raw, diffs, in_sql = at_rest
            if not raw:
                continue
            in_both += in_sql is not None
            report.wallets_compared += 1
            report.differences += diffs
            explained = _explained(diffs, dead.get(wallet))
            if explained is not None:
                report.explained_by_dead_letters[wallet] = explained
            if diffs and repair and wallet not in dead:
                target = (
                    report.repaired
                    if _repair(client, engine, keys, account_id, credit_type, raw)
                    else report.repair_skipped
                )
                target.append(wallet)
    finally:
        flusher.close()
    with engine.connect() as conn:
        sql_wallets = conn.execute(select(func.count()).select_from(T_WALLETS)).scalar_one()
    # Not a difference: such a wallet is loaded from SQL on its next touch.
    report.wallets_not_in_redis = sql_wallets - in_both
    return report


def _compare_at_rest(
    client: redis.Redis, flusher: Flusher, account_id: str, credit_type: str
) -> tuple[dict[Any, Any], list[Difference], WalletState | None] | None:
    """The Redis copy, its differences from SQL and SQL's copy, compared at one point of the
    journal: when they differ, SQL is flushed up to the copy's journal id and read again,
    and the result counts only if the wallet did not change meanwhile (then SQL holds
    exactly what the copy shows). None when the wallet kept changing: not compared."""
    keys, engine = flusher.keys, flusher.engine
    raw, last = read_at_position(client, keys, account_id, credit_type)
    for _ in range(limits.RECONCILE_WALLET_ATTEMPTS):
        now = now_ms()
        in_sql = _sql_wallet(engine, account_id, credit_type, now) if raw else None
        diffs = compare(account_id, credit_type, parse_wallet(raw, now), in_sql) if raw else []
        if not diffs or last is None:  # agree, or nothing left unflushed in the bucket
            return raw, diffs, in_sql
        flush_through(flusher, keys.bucket(account_id), last)
        in_sql = _sql_wallet(engine, account_id, credit_type, now)
        again, last = read_at_position(client, keys, account_id, credit_type)
        if again == raw:
            return raw, compare(account_id, credit_type, parse_wallet(raw, now), in_sql), in_sql
        raw = again
    return None


def _explained(diffs: list[Difference], dead_sum: int | None) -> int | None:
    """The dead letters' sum when the balance difference (Redis - SQL) is exactly it."""
    for d in diffs:
        if d.what == "balance" and d.redis is not None and d.sql is not None:
            return dead_sum if dead_sum is not None and d.redis - d.sql == dead_sum else None
    return None


def _repair(
    client: redis.Redis,
    engine: Engine,
    keys: Keys,
    account_id: str,
    credit_type: str,
    seen: dict[Any, Any],
) -> bool:
    """Replaces the Redis wallet with SQL's, unless it changed since it was compared: the
    hash is WATCHed and must equal what was compared, then written in one MULTI."""
    key = keys.wallet(account_id, credit_type)
    script = scripts.get("hydrate")
    with client.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(key)
            if pipe.hgetall(key) != seen:
                return False
            with engine.connect() as conn:
                snap = wallet_snapshot(conn, account_id, credit_type)
            ev = ops.hydrate_eval(keys, account_id, credit_type, snap)
            pipe.multi()
            pipe.delete(key)
            # EVAL: no NOSCRIPT in MULTI. As a raw command: a cluster pipeline has no eval().
            pipe.execute_command("EVAL", script.source, len(ev.keys), *ev.keys, *ev.args)
            pipe.execute()
        except redis.WatchError:
            return False
    return True
