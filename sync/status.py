"""How far behind SQL is: per-bucket journal length, pending entries, oldest unflushed age;
the flusher's progress; queue depths, failed jobs, dead letters, detected Redis losses and
Stripe events not applied.

The journal figures and the flusher's progress come from Redis alone, so the status keeps
answering through a SQL outage (the backlog can be watched growing, then draining): the
SQL-sourced figures (dead letters, gaps, Redis losses, Stripe events) are then None and
`sql` is "down".
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import redis
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from meter.keys import Keys
from meter.ops import as_text
from meter.times import now_ms
from sync.epoch import read_state
from sync.flush import GROUP, group_info
from sync.journal import stream_ms
from sync.models import T_DEAD, T_GAPS, T_STRIPE_EVENTS
from sync.purchases import UNAPPLIED_EVENT_STATUSES

FLUSH_STALL_MS: Final = 30_000  # The safety flush runs every 10 s and a batch commits in well
# under a second: an entry unflushed this long has been missed by three passes.
SQL_OK: Final = "ok"
SQL_DOWN: Final = "down"


@dataclass
class BucketStatus:
    bucket: int
    journal_length: int
    pending: int
    undelivered: int
    oldest_unflushed_age_ms: int | None

    @property
    def unflushed(self) -> int:
        """Entries not yet confirmed in SQL: delivered to a flusher or not."""
        return self.pending + self.undelivered


@dataclass(frozen=True)
class FlushProgress:
    """What the flusher last wrote to Keys.flush_progress() (sync/flush.py): its last
    success and its last error, as wall-clock ms (None: never)."""

    ok_at_ms: int | None
    error: str | None
    error_at_ms: int | None

    @property
    def failing(self) -> bool:
        """The last thing the flusher reported is an error."""
        return self.error_at_ms is not None and self.error_at_ms > (self.ok_at_ms or 0)


@dataclass
class SyncStatus:
    buckets: list[BucketStatus]
    queues: dict[str, int]
    failed_jobs: int
    dead_letters: int | None  # None: SQL is down
    gaps: int | None
    redis_lost: dict[str, Any] | None
    # Stripe events stored but not (yet) applied, by status: received, retrying, failed.
    stripe_events_unapplied: dict[str, int] | None = field(default_factory=dict)
    # Events that changed nothing on purpose (another product's on the same Stripe account, an
    # older state): counted apart, they are no failure.
    stripe_events_ignored: int | None = 0
    flush: FlushProgress = field(default_factory=lambda: FlushProgress(None, None, None))
    sql: str = SQL_OK
    unflushed_total: int = field(init=False)
    oldest_unflushed_age_ms: int | None = field(init=False)
    flush_stalled: bool = field(init=False)

    def __post_init__(self) -> None:
        self.unflushed_total = sum(b.unflushed for b in self.buckets)
        ages = [b.oldest_unflushed_age_ms for b in self.buckets if b.oldest_unflushed_age_ms]
        self.oldest_unflushed_age_ms = max(ages) if ages else None
        self.flush_stalled = flush_stalled(
            self.flush, self.unflushed_total, self.oldest_unflushed_age_ms
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def flush_stalled(progress: FlushProgress, unflushed: int, oldest_age_ms: int | None) -> bool:
    """The flush is not making progress: entries wait and the flusher's last word is an
    error, or an entry has waited FLUSH_STALL_MS (no flusher running at all)."""
    if oldest_age_ms is not None and oldest_age_ms >= FLUSH_STALL_MS:
        return True
    return unflushed > 0 and progress.failing


def _ms(raw: object) -> int | None:
    return None if raw is None else int(as_text(raw))


def flush_progress(client: redis.Redis, keys: Keys) -> FlushProgress:
    ok_at, error, error_at = client.hmget(
        keys.flush_progress(), ["ok_at_ms", "error", "error_at_ms"]
    )
    return FlushProgress(
        ok_at_ms=_ms(ok_at),
        error=None if error is None else as_text(error),
        error_at_ms=_ms(error_at),
    )


def bucket_status(client: redis.Redis, keys: Keys, bucket: int, now: int) -> BucketStatus:
    """One bucket's journal as the flush group sees it (every entry is unflushed when no
    flusher has created the group yet). The one implementation: /metrics uses it too."""
    journal = keys.journal(bucket)
    length = int(client.xlen(journal))
    group = group_info(client, journal) if length else None
    if group is None:
        first = client.xrange(journal, count=1) if length else []
        age = now - stream_ms(as_text(first[0][0])) if first else None
        return BucketStatus(bucket, length, 0, length, age)
    pending = int(group["pending"])
    last = as_text(group["last-delivered-id"])
    undelivered_first = client.xrange(journal, min=f"({last}", count=1)
    lag = group.get("lag")
    undelivered = int(lag) if lag is not None else len(undelivered_first or [])
    oldest: list[int] = []
    if pending:
        summary = client.xpending(journal, GROUP)
        if summary["min"] is not None:  # acknowledged since XINFO answered
            oldest.append(stream_ms(as_text(summary["min"])))
    if undelivered_first:
        oldest.append(stream_ms(as_text(undelivered_first[0][0])))
    age = max(0, now - min(oldest)) if oldest else None
    return BucketStatus(bucket, length, pending, undelivered, age)


def journal_status(client: redis.Redis, keys: Keys) -> list[BucketStatus]:
    """Every bucket's journal figures, from Redis alone."""
    now = now_ms()
    return [bucket_status(client, keys, b, now) for b in keys.all_buckets()]


@dataclass(frozen=True)
class _SqlFigures:
    dead_letters: int
    gaps: int
    redis_lost: dict[str, Any] | None
    stripe_events_unapplied: dict[str, int]
    stripe_events_ignored: int


def _sql_figures(engine: Engine, keys: Keys) -> _SqlFigures:
    with engine.connect() as conn:
        dead = conn.execute(
            select(func.count())
            .select_from(T_DEAD)
            .where(T_DEAD.c.journal.like(f"{keys.prefix}:%"))
        ).scalar_one()
        gaps = conn.execute(
            select(func.count())
            .select_from(T_GAPS)
            .where(T_GAPS.c.journal.like(f"{keys.prefix}:%"))
        ).scalar_one()
        unapplied = conn.execute(
            select(T_STRIPE_EVENTS.c.status, func.count())
            .where(T_STRIPE_EVENTS.c.status.in_(UNAPPLIED_EVENT_STATUSES))
            .group_by(T_STRIPE_EVENTS.c.status)
        ).all()
        ignored = conn.execute(
            select(func.count())
            .select_from(T_STRIPE_EVENTS)
            .where(T_STRIPE_EVENTS.c.status == "ignored")
        ).scalar_one()
    lost = read_state(engine, keys, "redis_lost")
    return _SqlFigures(
        dead_letters=int(dead),
        gaps=int(gaps),
        redis_lost=json.loads(lost) if lost else None,
        stripe_events_unapplied={str(status): int(n) for status, n in unapplied},
        stripe_events_ignored=int(ignored),
    )


def sync_status(
    client: redis.Redis,
    engine: Engine,
    keys: Keys,
    queue_depths: dict[str, int] | None = None,
    failed_jobs: int = 0,
) -> SyncStatus:
    """The whole status. Redis errors raise (without Redis there is no journal to report);
    a SQL error leaves the SQL figures None and `sql` "down"."""
    buckets = journal_status(client, keys)
    progress = flush_progress(client, keys)
    try:
        figures: _SqlFigures | None = _sql_figures(engine, keys)
    except SQLAlchemyError:
        figures = None
    return SyncStatus(
        buckets=buckets,
        queues=dict(queue_depths or {}),
        failed_jobs=failed_jobs,
        dead_letters=None if figures is None else figures.dead_letters,
        gaps=None if figures is None else figures.gaps,
        redis_lost=None if figures is None else figures.redis_lost,
        stripe_events_unapplied=None if figures is None else figures.stripe_events_unapplied,
        stripe_events_ignored=None if figures is None else figures.stripe_events_ignored,
        flush=progress,
        sql=SQL_DOWN if figures is None else SQL_OK,
    )
